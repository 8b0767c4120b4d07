"""Production settings: the base settings, hardened. Passes `manage.py check --deploy`.

DJANGO_SETTINGS_MODULE=controlplane.settings_production (docker-compose.yml, docs/deploy.md)
SECRET_KEY=...                      required (50+ random characters)
DJANGO_ALLOWED_HOSTS=edgeplane.example.com[,...]   required
DJANGO_CSRF_TRUSTED_ORIGINS=https://edgeplane.example.com   optional
EDGEPLANE_TRUSTED_PROXIES=172.30.0.2   the reverse proxy's address: only from it are X-Forwarded-For and
                                    X-Forwarded-Proto believed (controlplane/proxy.py). This replaces
                                    DJANGO_SECURE_PROXY_SSL_HEADER, which trusted the header from anyone
                                    and is refused now.
EDGEPLANE_PLAIN_HTTP=1              local use over plain http (no SSL redirect, secure cookies or HSTS);
                                    refused unless every DJANGO_ALLOWED_HOSTS entry is local
                                    (localhost, 127.0.0.1, ::1, web: the compose service)
DJANGO_HSTS_SECONDS=31536000        optional
Static files: collectstatic first (the image does it at build time); WhiteNoise serves them with
hashed names and gzip from STATIC_ROOT (EDGEPLANE_STATIC_ROOT).
"""

import os

from django.core.exceptions import ImproperlyConfigured

from controlplane.settings import *
from controlplane.settings_env import env_int, env_list

if not os.environ.get("SECRET_KEY"):
    raise ImproperlyConfigured(
        "controlplane.settings_production needs SECRET_KEY in the environment, e.g. "
        'SECRET_KEY="$(python -c "import secrets; print(secrets.token_urlsafe(50))")"'
    )
SECRET_KEY = os.environ["SECRET_KEY"]

ALLOWED_HOSTS = env_list(os.environ, "DJANGO_ALLOWED_HOSTS", "")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "controlplane.settings_production needs DJANGO_ALLOWED_HOSTS, e.g. "
        "DJANGO_ALLOWED_HOSTS=edgeplane.example.com"
    )
CSRF_TRUSTED_ORIGINS = env_list(os.environ, "DJANGO_CSRF_TRUSTED_ORIGINS", "")

DEBUG = False

if os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER"):
    raise ImproperlyConfigured(
        "DJANGO_SECURE_PROXY_SSL_HEADER is no longer read: it believed X-Forwarded-Proto from any client. "
        "Unset it and set EDGEPLANE_TRUSTED_PROXIES to the reverse proxy's address (docs/deploy.md)."
    )

# Plain http for local use only: a host anyone else can reach must get HTTPS.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "web"})
_plain = os.environ.get("EDGEPLANE_PLAIN_HTTP", "").strip()
if _plain not in ("", "0", "1"):
    raise ImproperlyConfigured(f"EDGEPLANE_PLAIN_HTTP={_plain!r}: use 1 (plain http, local hosts only) or 0 (HTTPS)")
PLAIN_HTTP = _plain == "1"
if PLAIN_HTTP and (_public := [host for host in ALLOWED_HOSTS if host.lower() not in LOCAL_HOSTS]):
    raise ImproperlyConfigured(
        f"EDGEPLANE_PLAIN_HTTP=1 serves without HTTPS, which is for local hosts only "
        f"({', '.join(sorted(LOCAL_HOSTS))}), but DJANGO_ALLOWED_HOSTS names {', '.join(_public)}. "
        "For a real domain set EDGEPLANE_PLAIN_HTTP=0 and let the proxy terminate TLS (docs/deploy.md)."
    )

SECURE_SSL_REDIRECT = not PLAIN_HTTP
# Asked over plain http by design, from inside the compose network (no proxy in between): the
# healthchecks, Prometheus' scrape and the gpu-worker's jobs posting steps to http://web:8000.
# Outside, the proxy itself sends http to https.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^api/ingest/"]
SESSION_COOKIE_SECURE = not PLAIN_HTTP
CSRF_COOKIE_SECURE = not PLAIN_HTTP
SECURE_HSTS_SECONDS = 0 if PLAIN_HTTP else env_int(os.environ, "DJANGO_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Hashed names (cached for a year by WhiteNoise), gzip twins and the scripts' imports rewritten to
# the hashed names, made by collectstatic (frontend/staticfiles.py). Only here: a template rendered
# before collectstatic ran fails with "Missing staticfiles manifest entry".
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "frontend.staticfiles.ProductionStorage"},
}
WHITENOISE_KEEP_ONLY_HASHED_FILES = True  # the unhashed copies are never linked: half the image's static files

# Keep connections to Postgres open between requests unless told otherwise.
for _db in DATABASES.values():
    if _db["ENGINE"] == "django.db.backends.postgresql" and not _db.get("CONN_MAX_AGE"):
        _db["CONN_MAX_AGE"] = env_int(os.environ, "DATABASE_CONN_MAX_AGE", 60)
        _db["CONN_HEALTH_CHECKS"] = True
