"""Reading settings from the environment: database URLs, the secret key, typed numbers.

Plain functions with no Django setup, so settings.py stays a list of names and the parsing is
tested on its own (tests/test_settings.py).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql")


def database_from_url(url: str, *, conn_max_age: int = 0) -> dict[str, Any]:
    """One DATABASES entry from a URL.

    postgres://user:pass@host:port/name?sslmode=require (postgresql:// too; user, password and
    host may be percent-encoded, so a socket directory is written %2Fvar%2Frun%2Fpostgresql;
    query parameters become psycopg connection options), or sqlite:////absolute/path.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        name = unquote(parts.path)[1:]  # sqlite:////abs/path -> /abs/path
        if parts.netloc or not name.startswith("/"):
            raise ImproperlyConfigured(
                "DATABASE_URL sqlite://...: write an absolute path, as in"
                " sqlite:////srv/edgeplane/db.sqlite3"
            )
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": name}
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ImproperlyConfigured(
            f"DATABASE_URL has scheme {parts.scheme!r}; use postgres://user:pass@host:port/name"
            " (or sqlite:////absolute/path)"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured(
            "DATABASE_URL names no database; end it with /<name>, as in"
            " postgres://user:pass@host:5432/edgeplane"
        )
    # The host as written (urlsplit's .hostname lower-cases it, which breaks socket paths).
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("["):  # [ipv6]:port
        host = hostport[1 : hostport.index("]")]
    else:
        host = hostport.partition(":")[0]
    try:
        port = parts.port
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL has a bad port: {exc}") from exc
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": unquote(host),
        "PORT": str(port) if port else "",
        "CONN_MAX_AGE": conn_max_age,
        "CONN_HEALTH_CHECKS": conn_max_age > 0,
        "OPTIONS": dict(parse_qsl(parts.query)),
    }


def secret_key_from(environ: Mapping[str, str], key_file: Path) -> str:
    """SECRET_KEY from the environment, else from key_file, created once with a random key.

    The file is written mode 600 and put in place with a hard link, so two processes starting
    together (web and worker) agree on one key.
    """
    key = environ.get("SECRET_KEY", "")
    if key:
        return key
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(50) + "\n")
            try:
                os.link(tmp, key_file)
            except FileExistsError:
                pass  # another process won the race: use its key
        finally:
            tmp.unlink(missing_ok=True)
    key = key_file.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{key_file} is empty; delete it or set SECRET_KEY")
    return key


def env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """An integer setting; a value that is not one fails naming the variable."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_list(environ: Mapping[str, str], name: str, default: str) -> list[str]:
    """A comma-separated list setting, blanks dropped."""
    return [item.strip() for item in environ.get(name, default).split(",") if item.strip()]
