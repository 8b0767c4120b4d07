"""Production settings: the base settings, hardened. Passes `manage.py check --deploy`.

DJANGO_SETTINGS_MODULE=controlplane.settings_production
SECRET_KEY=...                      required (50+ random characters)
DJANGO_ALLOWED_HOSTS=edgeplane.example.com[,...]   required
DJANGO_CSRF_TRUSTED_ORIGINS=https://edgeplane.example.com   optional
DJANGO_SECURE_PROXY_SSL_HEADER=1    behind a proxy that sets X-Forwarded-Proto (optional)
DJANGO_HSTS_SECONDS=31536000        optional
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

SECURE_SSL_REDIRECT = True
if os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER") == "1":
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int(os.environ, "DJANGO_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Keep connections to Postgres open between requests unless told otherwise.
for _db in DATABASES.values():
    if _db["ENGINE"] == "django.db.backends.postgresql" and not _db.get("CONN_MAX_AGE"):
        _db["CONN_MAX_AGE"] = env_int(os.environ, "DATABASE_CONN_MAX_AGE", 60)
        _db["CONN_HEALTH_CHECKS"] = True
