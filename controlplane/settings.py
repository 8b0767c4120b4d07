"""Django settings for Edgeplane, read from the environment.

Two ways to run the same code (ARCHITECTURE.md):
- Embedded (nothing set): SQLite in WAL mode and Celery on kombu's filesystem transport, both
  under var/ (EDGEPLANE_VAR_DIR); the secret key is created once in var/secret_key.
- Full stack: DATABASE_URL=postgres://user:pass@host:port/name and
  CELERY_BROKER_URL=redis://host:port/0 (docker-compose.yml, or `make test`, which starts both
  on loopback: tests/services.py).

Production: DJANGO_SETTINGS_MODULE=controlplane.settings_production (secure cookies, HSTS, SSL
redirect; SECRET_KEY and DJANGO_ALLOWED_HOSTS required).

Environment variables read here: DATABASE_URL, DATABASE_CONN_MAX_AGE, CELERY_BROKER_URL,
CELERY_RESULT_BACKEND, CELERY_BROKER_VISIBILITY_TIMEOUT, SECRET_KEY, DJANGO_DEBUG,
DJANGO_ALLOWED_HOSTS, EDGEPLANE_VAR_DIR, EDGEPLANE_HEARTBEAT_STALE_SECONDS,
EDGEPLANE_MAX_ATTEMPTS, EDGEPLANE_RUNS_DIR, EDGEPLANE_UPLOAD_MAX_BYTES,
EDGEPLANE_RECONCILE_SECONDS, EDGEPLANE_CONTROL_QUEUE, EDGEPLANE_CANCEL_GRACE_SECONDS, EDGEPLANE_CONTROL_URL,
EDGEPLANE_VERL_QUEUE, EDGEPLANE_RAY_ADDRESS, EDGEPLANE_VERL_RUNS_DIR, EDGEPLANE_VERL_MODEL_ROOT,
EDGEPLANE_MODELS_ROOT, EDGEPLANE_VERL_NNODES, EDGEPLANE_VERL_GPUS_PER_NODE, EDGEPLANE_VERL_OVERRIDES; accounts
(the block at the end): EDGEPLANE_SIGNIN_WINDOW_SECONDS, EDGEPLANE_SIGNIN_ADDRESS_ATTEMPTS,
EDGEPLANE_SIGNIN_USERNAME_ATTEMPTS, EDGEPLANE_SIGNIN_LOCKOUT_FAILURES, EDGEPLANE_SIGNIN_LOCKOUT_SECONDS,
EDGEPLANE_API_TOKEN_DAYS; EDGEPLANE_SQLITE_BUSY_SECONDS, EDGEPLANE_DB_IDLE_TRANSACTION_SECONDS,
EDGEPLANE_LAUNCH_RESEND_SECONDS; EDGEPLANE_RETENTION_SECONDS, EDGEPLANE_RETENTION_RUNS_PER_PASS,
EDGEPLANE_PARTITIONS_PURGE_SECONDS; EDGEPLANE_LOG_LEVEL; operations (docs/operations.md): EDGEPLANE_LOG_FORMAT,
EDGEPLANE_METRICS_TOKEN, EDGEPLANE_HEALTH_TIMEOUT_SECONDS, PROMETHEUS_MULTIPROC_DIR, EDGEPLANE_WORKER_METRICS_PORT,
EDGEPLANE_WORKER_METRICS_ADDR; the dataset limits EDGEPLANE_DATASET_* (read by
workers.problems.dataset, which workers share: docs/limits.md).
"""

import contextlib
import os
import shlex
from pathlib import Path

from controlplane.proxy import trusted_networks as _trusted_networks
from controlplane.settings_env import database_from_url, env_int, env_list, secret_key_from

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("EDGEPLANE_VAR_DIR") or BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)
EDGEPLANE_VAR_DIR = VAR_DIR

# From the environment, else var/secret_key (random, mode 600, created on first use).
SECRET_KEY = secret_key_from(os.environ, VAR_DIR / "secret_key")
# Off unless asked for (DJANGO_DEBUG=1): Django's debug page shows any visitor the settings
# and the environment, database password included. make demo asks for it (127.0.0.1 only).
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = env_list(os.environ, "DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "controlplane.accounts",
    "controlplane.datasets",
    "controlplane.runs",
    "controlplane.budgets",
    "controlplane.telemetry",
    "controlplane.api",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL (Postgres, or sqlite:////path), else SQLite under var/.
if os.environ.get("DATABASE_URL"):
    DATABASES = {
        "default": database_from_url(
            os.environ["DATABASE_URL"],
            conn_max_age=env_int(os.environ, "DATABASE_CONN_MAX_AGE", 0),
        )
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "edgeplane.sqlite3"}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Every SQLite file, named by DATABASE_URL or not, takes concurrent writers (web threads,
    # the worker, beat) without "database is locked": WAL lets readers go on while one writes;
    # IMMEDIATE takes the write lock when a transaction begins (a deferred one that upgrades
    # later fails at once, without waiting); a writer waits up to EDGEPLANE_SQLITE_BUSY_SECONDS
    # (default 30) for another's transaction.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": env_int(os.environ, "EDGEPLANE_SQLITE_BUSY_SECONDS", 30),
        **DATABASES["default"].get("OPTIONS", {}),
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A process frozen or cut off inside a transaction (a stopped worker, a partition) would hold
    # its row locks, the run's included, until the server noticed: the reconciler that must judge
    # that run lost would wait on it. Postgres ends such a transaction after this long idle
    # (EDGEPLANE_DB_IDLE_TRANSACTION_SECONDS, default 60; no transaction here waits on anything
    # but the database).
    _idle = env_int(os.environ, "EDGEPLANE_DB_IDLE_TRANSACTION_SECONDS", 60)
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        f"-c idle_in_transaction_session_timeout={_idle * 1000}")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# -- Operations: logs, health, metrics (controlplane/operations, docs/operations.md) ----------------------
# Logs go to stderr, one JSON object a line (EDGEPLANE_LOG_FORMAT=json, the default) or a readable
# line (plain): time, level, logger, message, and run_id/attempt (and the Celery task) on every
# line logged while a run's task executes. A server error's traceback goes here under its request
# id (logger edgeplane.errors), never to the client. EDGEPLANE_LOG_LEVEL: WARNING by default (a
# Celery worker's --loglevel applies when it asks for more).
from controlplane.operations.logs import log_format as _log_format
from controlplane.operations.logs import logging_config as _logging_config

EDGEPLANE_LOG_FORMAT = _log_format(os.environ.get("EDGEPLANE_LOG_FORMAT"))
LOGGING = _logging_config(fmt=EDGEPLANE_LOG_FORMAT, level=os.environ.get("EDGEPLANE_LOG_LEVEL", "WARNING").upper())
INSTALLED_APPS.append("controlplane.operations")
# First: times every request, and answers /healthz, /readyz and /metrics before host validation,
# the SSL redirect and sign-in (an internal checker calls them over http by a container name).
MIDDLEWARE.insert(0, "controlplane.operations.middleware.OperationsMiddleware")
# The same paths, should a request reach SecurityMiddleware (a stack without the middleware above).
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
# /metrics: with a token, `Authorization: Bearer <token>` from anywhere; without one, only direct
# loopback and private-network clients (not through a proxy that adds X-Forwarded-For).
EDGEPLANE_METRICS_TOKEN = os.environ.get("EDGEPLANE_METRICS_TOKEN", "")
# Each readiness check and each scrape-time collector gives up after this long (seconds).
EDGEPLANE_HEALTH_TIMEOUT_SECONDS = env_int(os.environ, "EDGEPLANE_HEALTH_TIMEOUT_SECONDS", 3)
# Several processes (gunicorn workers, a prefork Celery pool) write their samples here and a scrape
# adds them up; read by prometheus_client from the environment itself; empty: one process's own.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
# A Celery worker serves its own counters (ingest rows of the runs it trains) on this port; empty: not served.
EDGEPLANE_WORKER_METRICS_PORT = os.environ.get("EDGEPLANE_WORKER_METRICS_PORT", "")
EDGEPLANE_WORKER_METRICS_ADDR = os.environ.get("EDGEPLANE_WORKER_METRICS_ADDR", "127.0.0.1")

# REST API: token or browser session; nothing is public unless a view says so.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.api.authentication.TokenAuthentication",  # expiring (EDGEPLANE_API_TOKEN_DAYS)
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Bodies read within bounds (size before reading, JSON depth, finite numbers): 413/400, never 500.
    "DEFAULT_PARSER_CLASSES": [
        "controlplane.api.parsers.BoundedJSONParser",
        "controlplane.api.parsers.BoundedFormParser",
        "controlplane.api.parsers.BoundedMultiPartParser",
    ],
    # A malformed request is a 4xx with a message; anything else goes to handler500 (a request id, no traceback).
    "EXCEPTION_HANDLER": "controlplane.api.exceptions.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Edgeplane API",
    "DESCRIPTION": "Datasets, runs, telemetry and budgets of the Edgeplane control plane.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# Edgeplane: runs, telemetry, uploads.
# A running run whose last heartbeat is older than this is lost (the reconciler requeues it).
EDGEPLANE_HEARTBEAT_STALE_SECONDS = env_int(os.environ, "EDGEPLANE_HEARTBEAT_STALE_SECONDS", 120)
# Attempts per run (first launch included) before a lost run stays failed.
EDGEPLANE_MAX_ATTEMPTS = env_int(os.environ, "EDGEPLANE_MAX_ATTEMPTS", 3)
# Where runs write events and checkpoints: <EDGEPLANE_RUNS_DIR>/run-<id>/.
EDGEPLANE_RUNS_DIR = Path(os.environ.get("EDGEPLANE_RUNS_DIR") or VAR_DIR / "runs")
# Where per-prompt telemetry of runs past their team's retention goes, as Parquet files:
# <EDGEPLANE_ARCHIVE_DIR>/<team>/<run id>/{observations,decisions}.parquet (telemetry.retention).
EDGEPLANE_ARCHIVE_DIR = Path(os.environ.get("EDGEPLANE_ARCHIVE_DIR") or VAR_DIR / "archive")
# How often beat applies the teams' retention (seconds), and the most runs one pass archives
# (the rest wait for the next pass: a pass never holds the control queue for long).
EDGEPLANE_RETENTION_SECONDS = env_int(os.environ, "EDGEPLANE_RETENTION_SECONDS", 3600)
EDGEPLANE_RETENTION_RUNS_PER_PASS = env_int(os.environ, "EDGEPLANE_RETENTION_RUNS_PER_PASS", 5)
# How often beat drops the partitions that deleted or archived runs left detached
# (telemetry.partitions.run_rows_drop): their rows left every query at once, their disk space
# is freed by the next pass.
EDGEPLANE_PARTITIONS_PURGE_SECONDS = env_int(os.environ, "EDGEPLANE_PARTITIONS_PURGE_SECONDS", 300)
# The only folder runs load models from: a config's `model` is a folder name under it; absolute
# paths and names leaving it (.., symlinks out) are refused. Workers read the same variable with
# the same default (workers.engines.config.models_root: workers do not import Django).
EDGEPLANE_MODELS_ROOT = Path(os.environ.get("EDGEPLANE_MODELS_ROOT") or VAR_DIR / "models")
# Largest dataset upload accepted (bytes; 50 MiB).
EDGEPLANE_UPLOAD_MAX_BYTES = env_int(os.environ, "EDGEPLANE_UPLOAD_MAX_BYTES", 50 * 1024 * 1024)
# Request bodies read into memory (JSON posted to the ingestion endpoint: a step of a large
# batch is several MB). Uploaded dataset files stream to disk and are checked separately.
DATA_UPLOAD_MAX_MEMORY_SIZE = EDGEPLANE_UPLOAD_MAX_BYTES
# Largest event the ingestion endpoint reads, once decompressed (bytes; 512 MiB): an LZE epoch
# end that prunes a million prompts is a step of about 150 MB of JSON (gzip sends a tenth).
EDGEPLANE_INGEST_MAX_BYTES = env_int(os.environ, "EDGEPLANE_INGEST_MAX_BYTES", 512 * 1024 * 1024)
# Uploads are counted while they stream, before any handler keeps a byte: over
# EDGEPLANE_UPLOAD_MAX_BYTES (or a Content-Length over it) the request is refused with 413 and
# the temporary file is deleted (controlplane/api/parsers.py).
FILE_UPLOAD_HANDLERS = [
    "controlplane.api.parsers.LimitedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# How often beat runs the reconciler (seconds).
EDGEPLANE_RECONCILE_SECONDS = env_int(os.environ, "EDGEPLANE_RECONCILE_SECONDS", 30)
# A cancelled run is stopped by its engine at the next step boundary; a job outside the
# worker (verl) still running this long after the cancel is stopped by the reconciler.
EDGEPLANE_CANCEL_GRACE_SECONDS = env_int(os.environ, "EDGEPLANE_CANCEL_GRACE_SECONDS", 300)
# The control plane's root URL as a job on the GPU cluster reaches it (the ingestion endpoint).
EDGEPLANE_CONTROL_URL = os.environ.get("EDGEPLANE_CONTROL_URL") or "http://127.0.0.1:8000"

# verl runs (workers/engines/verl): launched and supervised by tasks on their own Celery queue,
# consumed by the gpu-worker (docker-compose.yml), which has the verl extra and sees the cluster.
EDGEPLANE_VERL_QUEUE = os.environ.get("EDGEPLANE_VERL_QUEUE") or "gpu"
# The Ray dashboard (http://head:8265) for the Jobs API; empty: a local subprocess on the gpu-worker.
EDGEPLANE_RAY_ADDRESS = os.environ.get("EDGEPLANE_RAY_ADDRESS", "")
# Run folders of verl jobs (<root>/run-<id>: parquet, logs, checkpoints): shared storage that the
# gpu-worker and every Ray node see at this path. Empty: EDGEPLANE_RUNS_DIR.
EDGEPLANE_VERL_RUNS_DIR = os.environ.get("EDGEPLANE_VERL_RUNS_DIR", "")
# Where the cluster sees model folders: a run's model (a checkpoint folder on the control plane)
# is read from <root>/<its folder name>. Empty: the same path as on the control plane.
EDGEPLANE_VERL_MODEL_ROOT = os.environ.get("EDGEPLANE_VERL_MODEL_ROOT", "")
EDGEPLANE_VERL_NNODES = env_int(os.environ, "EDGEPLANE_VERL_NNODES", 1)
EDGEPLANE_VERL_GPUS_PER_NODE = env_int(os.environ, "EDGEPLANE_VERL_GPUS_PER_NODE", 8)
# More hydra overrides for every verl job, appended last (shell words), e.g. micro batch sizes:
# "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4".
EDGEPLANE_VERL_OVERRIDES = tuple(shlex.split(os.environ.get("EDGEPLANE_VERL_OVERRIDES", "")))

# Celery (read by controlplane/celery.py under the CELERY_ namespace).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TIMEZONE = "UTC"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Tasks always go through the broker, tests included: a test that needs a task's effect runs
# a real worker.
CELERY_TASK_ALWAYS_EAGER = False
# A worker holds one message at a time beyond those it runs: a long run never sits in one
# worker's buffer while another worker is idle.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Ack after the task returns, and requeue when the worker process dies under it (killed,
# OOM): a launch is never lost with the worker that held it.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Keep running tasks when the broker connection drops (a training run outlives a Redis
# restart); the unacked message comes back later and finds its run already claimed.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat's reconciler has a queue of its own, read by a worker that trains nothing (make demo's
# "control" worker, `celery -A controlplane worker -Q control --pool=solo`): a reconcile never
# waits behind a training run, which holds its worker's slot for the whole run. The training
# workers read the default queue ("celery"), local launches included.
EDGEPLANE_CONTROL_QUEUE = os.environ.get("EDGEPLANE_CONTROL_QUEUE") or "control"
CELERY_TASK_ROUTES = {
    "edgeplane.launch_verl_run": {"queue": EDGEPLANE_VERL_QUEUE},
    "edgeplane.reconcile_verl_runs": {"queue": EDGEPLANE_VERL_QUEUE},
    "edgeplane.reconcile_runs": {"queue": EDGEPLANE_CONTROL_QUEUE},
    "edgeplane.telemetry_retention": {"queue": EDGEPLANE_CONTROL_QUEUE},
    "edgeplane.dropped_partitions_purge": {"queue": EDGEPLANE_CONTROL_QUEUE},
}
# The launch outbox (runs.services.run_launches_resend, run by beat's reconcile_runs): a run
# queued this long since its launch message was sent (or stored, when the broker could not be
# reached) without a worker claiming it gets the message again. Re-sent messages expire after
# twice this, so a run waiting behind others collects no pile of them.
EDGEPLANE_LAUNCH_RESEND_SECONDS = env_int(os.environ, "EDGEPLANE_LAUNCH_RESEND_SECONDS", 120)
CELERY_BEAT_SCHEDULE = {
    "reconcile-runs": {
        "task": "edgeplane.reconcile_runs",
        "schedule": float(EDGEPLANE_RECONCILE_SECONDS),
        # A reconcile not taken within one period is dropped by the worker that finds it (the
        # next one is on its way): a control worker that was down does not replay a backlog.
        "options": {"expires": float(EDGEPLANE_RECONCILE_SECONDS)},
    },
    "telemetry-retention": {
        "task": "edgeplane.telemetry_retention",
        "schedule": float(EDGEPLANE_RETENTION_SECONDS),
        "options": {"expires": float(EDGEPLANE_RETENTION_SECONDS)},
    },
    "dropped-partitions-purge": {
        "task": "edgeplane.dropped_partitions_purge",
        "schedule": float(EDGEPLANE_PARTITIONS_PURGE_SECONDS),
        "options": {"expires": float(EDGEPLANE_PARTITIONS_PURGE_SECONDS)},
    },
    # reconcile_runs also sends reconcile_verl_runs to the verl queue, only while verl runs are active.
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

if CELERY_BROKER_URL.startswith(("redis://", "rediss://", "redis+socket://")):
    # Redis visibility timeout (seconds). Caveat: Redis has no real acks; a message not acked
    # within this time is delivered again to another worker, even while the first worker is
    # still running it. With acks_late, a launch task stays unacked for its whole training
    # run, so long runs are redelivered every visibility_timeout: that is safe only because
    # the launch task claims the run atomically (UPDATE ... WHERE status='queued'), so the
    # redelivered message finds the run claimed and does nothing. Likewise, a task with an
    # ETA/countdown longer than this is delivered more than once. Lower values recover the
    # messages of a crashed worker sooner; the reconciler covers runs that were claimed.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int(os.environ, "CELERY_BROKER_VISIBILITY_TIMEOUT", 3600),
    }
elif CELERY_BROKER_URL == "filesystem://":
    _queue_dir = VAR_DIR / "celery" / "queue"
    _processed_dir = VAR_DIR / "celery" / "processed"
    _queue_dir.mkdir(parents=True, exist_ok=True)
    _processed_dir.mkdir(parents=True, exist_ok=True)
    _control_dir = VAR_DIR / "celery" / "control"  # kombu's default is ./control, in the working directory
    _control_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_processed_dir),
        "control_folder": str(_control_dir),
    }

# -- Accounts and the web surface (issue 13) ---------------------------------------------------------
# Passwords: every place a person sets one validates it against these (createteam, make demo,
# the admin, changepassword). 12 characters at least, not a common one, not all digits, not like
# the user name.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# First, so that its createsuperuser (validating DJANGO_SUPERUSER_PASSWORD in --noinput mode too)
# takes precedence over django.contrib.auth's.
INSTALLED_APPS.remove("controlplane.accounts")
INSTALLED_APPS.insert(0, "controlplane.accounts")

# Sign-in throttling (the browser sign-in, /api/auth/token/, the admin's sign-in: every
# authenticate() through this backend). Attempts are rows in the database (accounts.SignInAttempt),
# so every web process counts the same ones; a refused attempt answers 429 with Retry-After before
# any password is hashed.
AUTHENTICATION_BACKENDS = ["controlplane.accounts.backends.ThrottledModelBackend"]
# Attempts per client address (REMOTE_ADDR) and per username within the window, failed or not.
EDGEPLANE_SIGNIN_WINDOW_SECONDS = env_int(os.environ, "EDGEPLANE_SIGNIN_WINDOW_SECONDS", 60)
EDGEPLANE_SIGNIN_ADDRESS_ATTEMPTS = env_int(os.environ, "EDGEPLANE_SIGNIN_ADDRESS_ATTEMPTS", 30)
EDGEPLANE_SIGNIN_USERNAME_ATTEMPTS = env_int(os.environ, "EDGEPLANE_SIGNIN_USERNAME_ATTEMPTS", 10)
# This many failed sign-ins for a username within EDGEPLANE_SIGNIN_LOCKOUT_SECONDS lock it (any
# address, right password too) until that long after the last failure. An admin unlocks early by
# deleting the username's failed attempts (admin: Accounts > Sign-in attempts).
EDGEPLANE_SIGNIN_LOCKOUT_FAILURES = env_int(os.environ, "EDGEPLANE_SIGNIN_LOCKOUT_FAILURES", 5)
EDGEPLANE_SIGNIN_LOCKOUT_SECONDS = env_int(os.environ, "EDGEPLANE_SIGNIN_LOCKOUT_SECONDS", 900)
# A refused sign-in raised inside authenticate() (any caller) becomes a 429 here.
MIDDLEWARE.append("controlplane.accounts.middleware.SignInThrottledMiddleware")

# API tokens (Authorization: Token <key>) expire this many days after they were issued; a
# password change revokes them (and, through Django's session hash, the user's other sessions).
EDGEPLANE_API_TOKEN_DAYS = env_int(os.environ, "EDGEPLANE_API_TOKEN_DAYS", 30)
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "controlplane.api.authentication.TokenAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]

# /api/docs/: Swagger UI from drf-spectacular-sidecar's copy, served from /static/ (no CDN).
INSTALLED_APPS.append("drf_spectacular_sidecar")
SPECTACULAR_SETTINGS.update({"SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
                             "REDOC_DIST": "SIDECAR"})

# Content-Security-Policy on every response (django-csp). Scripts only from this origin, never
# inline (page data travel in json_script blocks, which are not executed). style-src needs
# 'unsafe-inline': Plotly injects <style> elements and sets style attributes as it draws, and the
# pages size their progress bars with style attributes. img-src data:/blob: for Plotly's icons
# and image export.
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "csp.middleware.CSPMiddleware")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# -- Deployment: static files, the reverse proxy (issue 14; docs/deploy.md) ------------------------------
# collectstatic's target. The image collects into /app/static at build time (EDGEPLANE_STATIC_ROOT),
# outside the var volume, which would hide it; elsewhere var/static.
STATIC_ROOT = Path(os.environ.get("EDGEPLANE_STATIC_ROOT") or VAR_DIR / "static")
with contextlib.suppress(OSError):  # WhiteNoise warns about a missing folder; a read-only one is fine
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# plotly.js from the plotly package, as the static file frontend/vendor/plotly.min.js (no CDN: CSP).
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "frontend.staticfiles.PlotlyFinder",
]
# WhiteNoise serves /static/ from the app server (settings_production: hashed names, gzip), right
# after the security headers; with DEBUG on it also serves the apps' folders without collectstatic.
MIDDLEWARE.insert(
    MIDDLEWARE.index("csp.middleware.CSPMiddleware" if "csp.middleware.CSPMiddleware" in MIDDLEWARE
                     else "django.middleware.security.SecurityMiddleware") + 1,
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
# The reverse proxy's addresses (IPs or CIDR networks, comma-separated). Only from these is
# X-Forwarded-For / X-Forwarded-Proto believed (controlplane/proxy.py); empty (default): nobody.
EDGEPLANE_TRUSTED_PROXIES = env_list(os.environ, "EDGEPLANE_TRUSTED_PROXIES", "")
_trusted_networks(EDGEPLANE_TRUSTED_PROXIES)  # a bad entry fails at start, naming it
# First: every later middleware (security redirect, CSRF, sign-in throttle) sees the client.
MIDDLEWARE.insert(0, "controlplane.proxy.TrustedProxyMiddleware")

# -- Notifications and the team's webhook (issue 15; docs/notifications.md) ---------------------------------
INSTALLED_APPS.insert(INSTALLED_APPS.index("controlplane.api"), "controlplane.notifications")
# Webhook deliveries go to the control queue: a training run holds a default-queue worker for its whole run.
CELERY_TASK_ROUTES["edgeplane.deliver_webhook"] = {"queue": EDGEPLANE_CONTROL_QUEUE}
# One delivery attempt gives up after this many seconds (connect, send and the whole answer together).
EDGEPLANE_WEBHOOK_TIMEOUT_SECONDS = env_int(os.environ, "EDGEPLANE_WEBHOOK_TIMEOUT_SECONDS", 10)
# Attempts per event: a 5xx, 429, timeout or connection error is retried after 10 s, 30 s, 90 s, ...
EDGEPLANE_WEBHOOK_ATTEMPTS = env_int(os.environ, "EDGEPLANE_WEBHOOK_ATTEMPTS", 5)
# Where a webhook may point. Link-local and cloud metadata addresses are always refused (SSRF);
# private networks are allowed (teams self-host their receivers); this host's loopback only when set.
EDGEPLANE_WEBHOOK_ALLOW_PRIVATE = env_int(os.environ, "EDGEPLANE_WEBHOOK_ALLOW_PRIVATE", 1) == 1
EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK = env_int(os.environ, "EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK", 0) == 1
# Beat: deliveries whose broker message was lost are sent again (notifications.services.webhook_deliveries_resend).
CELERY_TASK_ROUTES["edgeplane.resend_webhooks"] = {"queue": EDGEPLANE_CONTROL_QUEUE}
CELERY_BEAT_SCHEDULE["resend-webhooks"] = {"task": "edgeplane.resend_webhooks", "schedule": 300.0,
                                           "options": {"expires": 300.0}}
# The header's unread count is asked again this often by every open page (a COUNT query).
EDGEPLANE_NOTIFICATIONS_POLL_SECONDS = env_int(os.environ, "EDGEPLANE_NOTIFICATIONS_POLL_SECONDS", 30)
