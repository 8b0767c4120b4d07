"""A webhook receiver for tests: a real HTTP server on loopback, in a thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class Receiver:
    """An HTTP server in a thread that answers each POST with the next of ``codes`` (the last
    one repeats); "hang" never answers, "trickle" sends a byte every 0.2 s without ending."""

    def __init__(self, codes=(200,)) -> None:
        self.codes = list(codes)
        self.requests: list[dict] = []
        self.stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
                code = receiver.codes.pop(0) if len(receiver.codes) > 1 else receiver.codes[0]
                if code == "hang":
                    receiver.stop.wait(10)
                    return
                if code == "trickle":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    while not receiver.stop.wait(0.2):
                        try:
                            self.wfile.write(b"X-Slow: 1\r\n")
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answer {code}".encode())

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/edgeplane?team=acme"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
