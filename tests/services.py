"""Throwaway PostgreSQL and Redis on loopback, for the test suite and benchmarks.

    python tests/services.py [--durable] -- COMMAND [ARG ...]

Starts what the environment does not already give: PostgreSQL when DATABASE_URL is unset,
Redis when CELERY_BROKER_URL is unset. Each runs from the Debian packages (`postgresql`,
`redis-server`; scripts/apt-deps.sh installs them) on 127.0.0.1 and a free port, with its
files in one temporary directory. Once Postgres accepts connections (pg_isready) and Redis
answers PING, COMMAND runs with these exported:

    DATABASE_URL              postgres://edgeplane:<random>@127.0.0.1:<port>/edgeplane
                              (role edgeplane: LOGIN CREATEDB, not a superuser, so
                              pytest-django can create test_edgeplane)
    CELERY_BROKER_URL         redis://127.0.0.1:<port>/0
    EDGEPLANE_TEST_REDIS_URL  redis://127.0.0.1:<port>/1 (a database tests may flush)

Afterwards both are stopped and the directory removed, whether COMMAND passed, failed, or was
stopped by Ctrl-C or SIGTERM; the exit status is COMMAND's (128+N for signal N). Were this
process itself killed outright, the servers get a signal from the kernel (PR_SET_PDEATHSIG)
and stop, and the next run removes the directory.

Postgres runs with fsync off (fast, not crash-safe) unless --durable is given: use --durable
for benchmarks whose figures are reported. EDGEPLANE_PG_SETTINGS adds server settings, space
separated (e.g. "shared_buffers=2GB max_wal_size=16GB"): a benchmark names the ones it ran with.

Running as root, Postgres runs as the `postgres` user (initdb refuses root). Only the standard
library is used here, so this runs before any virtual environment exists.

From Python: `with services() as env: ...` gives the same variables.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DIR_PREFIX = "edgeplane-services-"
PG_ROLE = "edgeplane"
PG_DATABASE = "edgeplane"
START_ATTEMPTS = 5  # a free port can be taken between choosing it and binding it
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1


class ServiceError(RuntimeError):
    """A service could not be started; the message says why and shows its log."""


def say(message: str) -> None:
    print(f"services: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when this process dies (Linux), even by SIGKILL."""
    parent = os.getpid()

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), sig)

    return preexec


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """True once ready(); False if proc exits first. Raises ServiceError on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
    raise ServiceError(f"not ready after {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes], first: signal.Signals, then: signal.Signals) -> None:
    """Signal `first`, wait; then `then`, wait; then SIGKILL. Always reaps the process."""
    for sig, wait_s in ((first, STOP_TIMEOUT_S), (then, 10.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)


class Postgres:
    """A PostgreSQL cluster in `base`/postgres, serving 127.0.0.1 only."""

    def __init__(self, base: Path, *, durable: bool = False) -> None:
        self.bindir = find_pg_bindir()
        self.dir = base / "postgres"
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.durable = durable
        self.password = secrets.token_hex(16)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # initdb and postgres refuse to run as root: run them as the postgres user.
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError(
                    "running as root, but there is no `postgres` user to run PostgreSQL as;"
                    " install the postgresql package (scripts/apt-deps.sh)"
                ) from None
            self.user = "postgres"

    @property
    def url(self) -> str:
        return f"postgres://{PG_ROLE}:{self.password}@127.0.0.1:{self.port}/{PG_DATABASE}"

    @property
    def version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"],
            check=False,
            capture_output=True,
            text=True,
        ).stdout
        match = re.search(r"\d+(\.\d+)?", out)
        return match.group(0) if match else "?"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            check=False,
            user=self.user,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ServiceError(f"{args[0]} failed ({result.returncode}):\n{result.stderr}")

    def start(self) -> None:
        self.dir.mkdir()
        if self.user:
            shutil.chown(self.dir, user=self.user, group=self.user)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--no-locale",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        speed = [] if self.durable else [
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]  # fmt: skip
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        str(self.bindir / "postgres"), "-D", str(self.data),
                        "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                        "-c", f"unix_socket_directories={self.dir}", *speed,
                        *[a for kv in os.environ.get("EDGEPLANE_PG_SETTINGS", "").split() for a in ("-c", kv)],
                    ],
                    user=self.user,
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in the terminal is for the tests, not us
                    preexec_fn=_die_with_parent(signal.SIGQUIT),  # noqa: PLW1509 (no threads)
                )  # fmt: skip
            try:
                ready = _wait_until(self._is_ready, self.proc, READY_TIMEOUT_S)
            except ServiceError as exc:
                raise ServiceError(f"PostgreSQL {exc}; its log:\n{_log_tail(self.log)}") from None
            if ready:
                break
            if "could not bind" not in _log_tail(self.log, 10):
                raise ServiceError(f"PostgreSQL exited; its log:\n{_log_tail(self.log)}")
        else:
            raise ServiceError(f"PostgreSQL found no free port; its log:\n{_log_tail(self.log)}")
        self._run(
            "psql", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-d", "postgres",
            "-q", "-v", "ON_ERROR_STOP=1",
            "-c", f"CREATE ROLE {PG_ROLE} LOGIN CREATEDB PASSWORD '{self.password}'",
            "-c", f"CREATE DATABASE {PG_DATABASE} OWNER {PG_ROLE}",
            # a bench writes its fill's pages out (CHECKPOINT) before it times reads: bench/telemetry_scale.py
            "-c", "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pg_checkpoint') "
                  f"THEN GRANT pg_checkpoint TO {PG_ROLE}; END IF; END $$",  # the role is Postgres 15's
        )  # fmt: skip

    def _is_ready(self) -> bool:
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
             "-d", "postgres", "-t", "2"],
            check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return result.returncode == 0

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGINT, signal.SIGQUIT)  # fast shutdown, then immediate


class Redis:
    """A Redis server in `base`/redis on 127.0.0.1, with no persistence."""

    def __init__(self, base: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise ServiceError(
                "redis-server not found; install the redis-server package (scripts/apt-deps.sh)"
            )
        self.binary = binary
        self.dir = base / "redis"
        self.log = self.dir / "redis.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.dir.mkdir()
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                        "--protected-mode", "yes", "--daemonize", "no", "--dir", str(self.dir),
                        "--save", "", "--appendonly", "no", "--loglevel", "warning",
                    ],
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(signal.SIGTERM),  # noqa: PLW1509
                )  # fmt: skip
            try:
                ready = _wait_until(lambda: redis_ping(self.url()), self.proc, READY_TIMEOUT_S)
            except ServiceError as exc:
                raise ServiceError(f"Redis {exc}; its log:\n{_log_tail(self.log)}") from None
            if ready:
                return
            if "Address already in use" not in _log_tail(self.log, 10):
                raise ServiceError(f"Redis exited; its log:\n{_log_tail(self.log)}")
        raise ServiceError(f"Redis found no free port; its log:\n{_log_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGTERM, signal.SIGQUIT)


def redis_ping(url: str, timeout: float = 2.0) -> bool:
    """True if the Redis server at redis://host:port/... answers PING with PONG."""
    match = re.fullmatch(r"redis://(?:[^@/]*@)?([^:/]+):(\d+)(?:/.*)?", url)
    if not match:
        raise ValueError(f"not a redis://host:port URL: {url}")
    try:
        with socket.create_connection((match.group(1), int(match.group(2))), timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def find_pg_bindir() -> Path:
    """The newest /usr/lib/postgresql/<N>/bin (Debian), else the folder of `initdb` on PATH."""
    override = os.environ.get("EDGEPLANE_PG_BINDIR")
    candidates = [Path(override)] if override else []
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0],
        reverse=True,
    )
    candidates += debian
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    raise ServiceError(
        "PostgreSQL server binaries (initdb, postgres) not found; install the postgresql"
        " package (scripts/apt-deps.sh) or set DATABASE_URL"
    )


def sweep_stale_dirs(tmp: Path) -> None:
    """Remove directories left by runs whose process no longer exists."""
    for path in tmp.glob(f"{DIR_PREFIX}*"):
        match = re.match(rf"{DIR_PREFIX}(\d+)-", path.name)
        if not match or not path.is_dir():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


@contextlib.contextmanager
def services(
    environ: dict[str, str] | None = None, *, durable: bool = False
) -> Iterator[dict[str, str]]:
    """Start what `environ` lacks (DATABASE_URL, CELERY_BROKER_URL); yield the variables to
    export (empty if both are given); stop everything and remove the directory on exit."""
    environ = dict(os.environ if environ is None else environ)
    want_pg = not environ.get("DATABASE_URL")
    want_redis = not environ.get("CELERY_BROKER_URL")
    if not (want_pg or want_redis):
        say("using DATABASE_URL and CELERY_BROKER_URL from the environment")
        yield {}
        return
    tmp = Path(tempfile.gettempdir())
    sweep_stale_dirs(tmp)
    base = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=tmp))
    base.chmod(0o711)  # the postgres user must reach its folder inside
    started: list[Postgres | Redis] = []
    try:
        exported: dict[str, str] = {}
        t0 = time.monotonic()
        if want_pg:
            pg = Postgres(base, durable=durable)
            started.append(pg)
            pg.start()
            exported["DATABASE_URL"] = pg.url
            assert pg.proc is not None
            say(
                f"PostgreSQL {pg.version} on 127.0.0.1:{pg.port} (pid {pg.proc.pid}"
                f"{', fsync off' if not durable else ''}) in {time.monotonic() - t0:.1f} s"
            )
        else:
            say("PostgreSQL: using DATABASE_URL from the environment")
        t1 = time.monotonic()
        if want_redis:
            redis = Redis(base)
            started.append(redis)
            redis.start()
            exported["CELERY_BROKER_URL"] = redis.url(0)
            exported["EDGEPLANE_TEST_REDIS_URL"] = redis.url(1)
            assert redis.proc is not None
            say(
                f"Redis on 127.0.0.1:{redis.port} (pid {redis.proc.pid}, no persistence)"
                f" in {time.monotonic() - t1:.1f} s"
            )
        else:
            say("Redis: using CELERY_BROKER_URL from the environment")
        yield exported
    finally:
        # Finish cleaning up even if another Ctrl-C or SIGTERM arrives meanwhile.
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in _STOP_SIGNALS}
        try:
            for service in reversed(started):
                service.stop()
            shutil.rmtree(base, ignore_errors=True)
            if started:
                say("stopped " + " and ".join(type(s).__name__ for s in started))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def _terminal_sent_it_to_the_child() -> bool:
    """Whether a Ctrl-C reached the child already: we are the terminal's foreground group."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def run_command(command: list[str], env: dict[str, str]) -> int:
    """Run command in the foreground; pass SIGTERM/SIGHUP (and a Ctrl-C that did not come from
    the terminal) on to it; return its status, 128+N if signal N ended it."""
    child: subprocess.Popen[bytes] = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and _terminal_sent_it_to_the_child():
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, forward)
    try:
        rc = child.wait()
    finally:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, _raise_stopped)
    return 128 - rc if rc < 0 else rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tests/services.py",
        description="Run COMMAND with throwaway PostgreSQL and Redis on loopback.",
    )
    parser.add_argument("--durable", action="store_true", help="keep fsync on (benchmarks)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _raise_stopped)
    try:
        with services(durable=args.durable) as exported:
            return run_command(command, {**os.environ, **exported})
    except _Stopped as stopped:
        say(f"stopped by signal {stopped.signum}")
        return 128 + stopped.signum
    except ServiceError as exc:
        say(f"could not start: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
