"""Is a Celery worker alive and consuming? For a container healthcheck or an operator.

    python -m controlplane.operations.worker_health [--destination celery@HOST] [--timeout 10] [--queue NAME]

Pings the worker through the broker (Celery's remote control: the worker's own consumer answers,
so a worker that is up but cut off from the broker fails too). Exit 0 and one JSON line naming the
worker, the queues it consumes and how many tasks it executes; exit 1 with what failed and what
to do. ``--destination`` defaults to this machine's default node name, celery@<hostname> (a
compose worker's container). ``--queue`` also requires the worker to consume that queue.

The same check with Celery's own command: ``celery -A controlplane inspect ping --destination
celery@$HOSTNAME --timeout 10``. A worker running a long training task still answers: pings are
handled by the worker's main process, not by the pool that trains.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlplane.operations.worker_health",
                                     description="Exit 0 when the Celery worker answers a ping through the broker.")
    parser.add_argument("--destination", default=f"celery@{socket.gethostname()}",
                        help="the worker's node name (default: celery@<this hostname>)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer (default 10)")
    parser.add_argument("--queue", default="", help="also require the worker to consume this queue")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()
    from controlplane.celery import app
    from controlplane.operations.health import broker_connection, describe_error

    try:
        with broker_connection(args.timeout) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=args.timeout)
            inspect = app.control.inspect(destination=[args.destination], timeout=args.timeout, connection=conn)
            pong = inspect.ping() or {}
            if args.destination not in pong:
                print(f"worker {args.destination} did not answer a ping within {args.timeout:g} s; is it running and "
                      "connected to the broker? (`celery -A controlplane inspect ping` lists those that answer)",
                      file=sys.stderr)
                return 1
            queues = sorted(q["name"] for q in (inspect.active_queues() or {}).get(args.destination) or [])
            active = len((inspect.active() or {}).get(args.destination) or [])
    except Exception as exc:  # noqa: BLE001 - a healthcheck answers with an exit status, never a traceback
        print(f"could not ask worker {args.destination}: {describe_error(exc)}", file=sys.stderr)
        return 1
    if args.queue and args.queue not in queues:
        print(f"worker {args.destination} answers but does not consume queue {args.queue!r} (it consumes: "
              f"{', '.join(queues) or 'nothing'}); start it with -Q {args.queue}", file=sys.stderr)
        return 1
    print(json.dumps({"worker": args.destination, "status": "ok", "queues": queues, "active": active}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
