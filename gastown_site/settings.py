"""Gas Town settings, read from the environment (12-factor).

Nothing set: the embedded default (SQLite in WAL mode and an embedded Redis on a unix socket,
both under the data dir). `DATABASE_URL` and `REDIS_URL` select PostgreSQL and Redis.
"""

import logging
import os
import secrets
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


TESTING = "pytest" in sys.modules

# One version for the server, its backups' manifests and /healthz (bin/gt carries the same).
with open(BASE_DIR / "pyproject.toml", "rb") as pyproject:
    GASTOWN_VERSION = tomllib.load(pyproject)["project"]["version"]

# Everything the server creates (database, logs, sockets, keys, worktrees) is private to its user:
# directories 0700, files 0600.
os.umask(0o077)

# Under pytest each run gets a private data dir, so tests never share var/ (or its embedded
# Redis) with a running `make run`.
if os.environ.get("GASTOWN_DATA_DIR"):
    DATA_DIR = Path(os.environ["GASTOWN_DATA_DIR"]).resolve()
elif TESTING:
    DATA_DIR = Path(tempfile.mkdtemp(prefix="gastown-test-")).resolve()
else:
    DATA_DIR = BASE_DIR / "var"
# `manage.py <command>` makes a missing data dir only for `migrate` (`make run` and `make
# migrate` start with it); any other command is told there is no database there
# (gastown_site/database_check.py) and leaves no empty ./var behind. The server, workers and
# tests make it as before.
MANAGE_PY = bool(sys.argv) and Path(sys.argv[0]).name == "manage.py"
if DATA_DIR.is_dir() or not MANAGE_PY or sys.argv[1:2] == ["migrate"]:
    DATA_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    DATA_DIR.chmod(0o700)

DATABASE_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED = not DATABASE_URL and not REDIS_URL
DEBUG = env_bool("DEBUG", False)

# A development key is only acceptable with DEBUG on. Without SECRET_KEY the embedded default
# generates a per-installation key under the data dir; production must set its own.
DEV_SECRET_KEY = "django-insecure-gastown-development-key"
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if DEBUG or TESTING:
        SECRET_KEY = DEV_SECRET_KEY
    elif not DATABASE_URL and not DATA_DIR.is_dir():  # manage.py says so and stops
        SECRET_KEY = secrets.token_urlsafe(50)
    elif not DATABASE_URL:
        key_file = DATA_DIR / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(50))
            key_file.chmod(0o600)
        SECRET_KEY = key_file.read_text().strip()
    else:
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set (production).")
if SECRET_KEY.startswith("django-insecure") and not (DEBUG or TESTING):
    raise ImproperlyConfigured(
        "Refusing to start with the development SECRET_KEY while DEBUG is off: set SECRET_KEY."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",
    "common",
    "events",
    "rigs",
    "notifications",
    "convoys",
    "cascades",
    "runner",
    "audit",
    "backups",
    "demo",
    "board",
]

MIDDLEWARE = [
    # first: every request (a refused one too) gets an id in its log lines and is counted
    "common.middleware.RequestContextMiddleware",
    "common.middleware.RequestMetricsMiddleware",
    "common.middleware.BodySizeLimitMiddleware",
    "common.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # last: it answers a locked-out login before the view checks the password
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "gastown_site.urls"
ASGI_APPLICATION = "gastown_site.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "runner.context_processors.sandbox",
                "board.context_processors.escalations",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
if DATABASE_URL:
    # Under ASGI each request runs in its own thread; persistent per-thread connections pile
    # up until PostgreSQL refuses clients. A small pool per process shares a few instead.
    # Health checks: a connection PostgreSQL dropped (a restart, pg_terminate_backend) is
    # replaced when it is taken (the pool checks it: one round trip), not handed to the next
    # request or task to fail there; without them the pool failed once per connection it held.
    DATABASES = {
        "default": dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)
    }
    if not TESTING and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": int(os.environ.get("GASTOWN_DB_POOL_MIN", "2")),
            "max_size": int(os.environ.get("GASTOWN_DB_POOL_MAX", "16")),
        }
    # JIT compilation costs more than it saves on the short graph queries (`ready`) we run.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("GASTOWN_SQLITE_PATH") or DATA_DIR / "gastown.sqlite3",
            "OPTIONS": {
                # WAL lets the web process read while a worker writes; IMMEDIATE takes the write
                # lock up front, so concurrent writers wait instead of failing mid-transaction.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
            # A file, not shared-cache memory: worker threads in tests then get real WAL
            # locking with a busy timeout instead of "table is locked" errors.
            "TEST": {"NAME": str(DATA_DIR / "test.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker and channel layer -------------------------------------------------
EMBEDDED_REDIS_SOCKET = DATA_DIR / "redis.sock"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CHANNEL_REDIS_HOST: str | dict = REDIS_URL
else:
    CELERY_BROKER_URL = f"redis+socket://{EMBEDDED_REDIS_SOCKET}"
    CHANNEL_REDIS_HOST = {"address": f"unix://{EMBEDDED_REDIS_SOCKET}"}

# Under pytest, a private queue and channel prefix keep test runs apart on a shared Redis.
RUN_TAG = f"test-{os.getpid()}-{secrets.token_hex(3)}" if TESTING else ""
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [CHANNEL_REDIS_HOST],
            "capacity": 1000,
            "expiry": 30,
            "prefix": os.environ.get("GASTOWN_CHANNEL_PREFIX")
            or (f"asgi-{RUN_TAG}" if RUN_TAG else "asgi"),
        },
    }
}

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("GASTOWN_QUEUE") or (
    f"gastown-{RUN_TAG}" if RUN_TAG else "gastown"
)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "sync-live-rigs": {"task": "rigs.tasks.rig_sync_all", "schedule": 60.0},
    "mark-stalled-rigs": {"task": "rigs.tasks.rigs_mark_stalled", "schedule": 30.0},
    "reconcile": {"task": "rigs.tasks.reconcile", "schedule": 600.0},
    "merge-queues": {"task": "rigs.tasks.merge_queues_kick", "schedule": 30.0},
    "provisions": {"task": "rigs.tasks.rig_provisions_kick", "schedule": 60.0},
    "supervise-agent-runs": {"task": "runner.tasks.agent_runs_supervise", "schedule": 10.0},
    "prune-run-logs": {"task": "runner.tasks.agent_run_logs_prune", "schedule": 3600.0},
    "expire-claim-leases": {"task": "convoys.tasks.bead_leases_expire", "schedule": 30.0},
}

# --- Auth, i18n, static ---------------------------------------------------------------------
# Logins are throttled (django-axes): after GASTOWN_LOGIN_FAILURES wrong passwords for one user
# name, or from one address, further attempts are refused without checking the password until
# GASTOWN_LOGIN_COOLOFF_MINUTES pass (or an admin runs `manage.py axes_reset`).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("GASTOWN_LOGIN_FAILURES", "5"))
AXES_COOLOFF_TIME = float(os.environ.get("GASTOWN_LOGIN_COOLOFF_MINUTES", "15")) / 60
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_IPWARE_PROXY_COUNT = int(os.environ.get("GASTOWN_PROXY_COUNT", "0")) or None
AXES_VERBOSE = False
# Failed API token checks per client address per minute before the address is refused (429).
GASTOWN_TOKEN_FAILURES_PER_MINUTE = int(os.environ.get("GASTOWN_TOKEN_FAILURES_PER_MINUTE", "30"))
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
if DATA_DIR.is_dir():
    STATIC_ROOT.mkdir(exist_ok=True)
# Serve straight from the finders, so `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # `Token gt_…` (agents), `Token gtp_…` (people's personal tokens) and `Token gtr_…`
        # (the per-run token of an agent the runner launched)
        "rigs.auth.AgentTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rigs.permissions.HasRole"],
    # every list: unknown query parameters refused, its filters, `search` and `ordering` where
    # the view offers them (common/filters.py)
    "DEFAULT_FILTER_BACKENDS": [
        "common.filters.KnownQueryParams",
        "django_filters.rest_framework.DjangoFilterBackend",
        "common.filters.Search",
        "common.filters.Ordering",
    ],
    "DEFAULT_PAGINATION_CLASS": "common.api.Pagination",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "common.negotiation.ContentNegotiation",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": ["rigs.auth.TokenRateThrottle"],
    # Per token (per user for sessions) and per address for anonymous calls. An agent polling
    # ready, heartbeat and inbox every second uses 180/min.
    "DEFAULT_THROTTLE_RATES": {
        "token": os.environ.get("GASTOWN_API_RATE", "1200/min"),
        "anon": os.environ.get("GASTOWN_API_ANON_RATE", "120/min"),
    },
    "DEFAULT_SCHEMA_CLASS": "common.schema.AutoSchema",
    "EXCEPTION_HANDLER": "common.api.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "common.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Gas Town API",
    "DESCRIPTION": "Coordinate many AI coding agents on one codebase: rigs, convoys, beads, "
    "merge requests, notifications and the event log. Agents authenticate with "
    "`Authorization: Token <key>`; people with a session (and CSRF) or a personal token. "
    'Errors are `{"error": {"code", "message", "field", "errors"}}`: `errors` lists every '
    "problem of bad input at once. Lists take only the query parameters they document (another "
    "is a 400). See docs/api.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # one tag per resource (common.schema.AutoSchema: the path's first segment under /api/v1/)
    "TAGS": [
        {"name": "me", "description": "Who am I, and the agent's briefing."},
        {"name": "repositories", "description": "The git repositories agents work on."},
        {"name": "rigs", "description": "One agent's workspace: worktree, branch, state."},
        {"name": "merge-requests", "description": "The merge queue: landing a rig's branch."},
        {"name": "convoys", "description": "Batches of work across rigs, in legs and waves."},
        {"name": "beads", "description": "The task graph: claim, close, dependencies."},
        {"name": "notifications", "description": "A rig's inbox: notices to read and ack."},
        {"name": "messages", "description": "Messages between rigs."},
        {"name": "escalations", "description": "Questions to people, and their answers."},
        {
            "name": "review-comments",
            "description": "People's comments on a rig's change, and the agent's answers.",
        },
        {"name": "runs", "description": "Agent runs: launch, follow the log, stop, usage."},
        {"name": "budgets", "description": "Limits on what agents spend, enforced by the runner."},
        {"name": "events", "description": "The append-only event log, for replay."},
        {"name": "cli", "description": "The `gt` command-line client."},
    ],
    # The schema is the public contract agents and the `gt` CLI rely on.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "common.schema.add_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "RigStateEnum": "rigs.models.RigState",
        "MergeRequestStateEnum": "rigs.models.MergeRequestState",
        "ConvoyStateEnum": "convoys.models.ConvoyState",
        "BeadStatusEnum": "convoys.models.BeadStatus",
        "BeadTypeEnum": "convoys.models.Bead.Type",
        "DependencyTypeEnum": "convoys.models.BeadDependency.Type",
    },
}

# --- Security: request size, HTTPS, headers ------------------------------------------------------
# A request body larger than this gets 413 (the API's error body) before anything reads it.
GASTOWN_MAX_BODY_BYTES = int(os.environ.get("GASTOWN_MAX_BODY_BYTES", str(1024 * 1024)))
DATA_UPLOAD_MAX_MEMORY_SIZE = GASTOWN_MAX_BODY_BYTES
# Production (DATABASE_URL set, DEBUG off) is served over HTTPS behind a proxy that sets
# X-Forwarded-Proto (docs/operations.md); each of these can be turned off for a plain-HTTP
# installation on a trusted network.
PRODUCTION = bool(DATABASE_URL) and not DEBUG and not TESTING
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("GASTOWN_SSL_REDIRECT", PRODUCTION)
# Probes and scrapers call the web processes directly (a scraper's token is already sent by
# the time a redirect would answer, so redirecting it protects nothing).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("GASTOWN_SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = int(os.environ.get("GASTOWN_HSTS_SECONDS", "31536000" if PRODUCTION else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("GASTOWN_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("GASTOWN_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
if not SECURE_HSTS_PRELOAD:
    # a deliberate choice (preloading is hard to undo), not an oversight
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
# Content-Security-Policy: the board loads nothing from elsewhere and runs no inline script
# (style attributes set progress-bar widths).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF, "ws:", "wss:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Gas Town ---------------------------------------------------------------------------------
# Repositories may only live under these roots (paths outside are refused at registration).
GASTOWN_REPOSITORY_ROOTS = [
    Path(p).resolve() for p in env_list("GASTOWN_REPOSITORY_ROOTS", str(DATA_DIR / "repositories"))
]
GASTOWN_WORKTREE_ROOT = DATA_DIR / "worktrees"
GASTOWN_HEARTBEAT_LIMIT_SECONDS = int(os.environ.get("GASTOWN_HEARTBEAT_LIMIT_SECONDS", "300"))
# A claim on a bead is a lease: renewed by the holder's heartbeats (and its run's output), it
# lapses after this long without one and the bead is open again (convoys/services/leases.py).
# A rig requested or provisioning whose row has not moved for this long is provisioned again
# (rigs.tasks.rig_provisions_kick): its task was lost with a killed worker or a broker restart.
GASTOWN_PROVISION_STALE_SECONDS = float(os.environ.get("GASTOWN_PROVISION_STALE_SECONDS", "60"))
GASTOWN_CLAIM_LEASE_SECONDS = int(os.environ.get("GASTOWN_CLAIM_LEASE_SECONDS", "600"))
if GASTOWN_CLAIM_LEASE_SECONDS < 1:
    raise ImproperlyConfigured("GASTOWN_CLAIM_LEASE_SECONDS must be at least 1 (seconds).")
GASTOWN_GIT_TIMEOUT_SECONDS = int(os.environ.get("GASTOWN_GIT_TIMEOUT_SECONDS", "120"))

# Agent runs: where agents reach the API, how many run at once on this machine, restarts.
# Agents, gates and setup commands run inside bubblewrap unless this is `none` (docs/runner.md).
GASTOWN_SANDBOX = os.environ.get("GASTOWN_SANDBOX") or (
    "bwrap" if shutil.which("bwrap") else "none"
)
if GASTOWN_SANDBOX not in ("bwrap", "none"):
    raise ImproperlyConfigured(f"GASTOWN_SANDBOX must be bwrap or none, not {GASTOWN_SANDBOX!r}")
# Who may read which events (events.access asks this module).
GASTOWN_EVENT_ACCESS = "convoys.event_access"
GASTOWN_WEBHOOK_ALLOW_PRIVATE = env_bool("GASTOWN_WEBHOOK_ALLOW_PRIVATE", False)  # private hosts
GASTOWN_URL = os.environ.get("GASTOWN_URL", "http://127.0.0.1:8000").rstrip("/")
GASTOWN_MAX_AGENTS = int(os.environ.get("GASTOWN_MAX_AGENTS") or os.cpu_count() or 2)
GASTOWN_RUN_MAX_RESTARTS = int(os.environ.get("GASTOWN_RUN_MAX_RESTARTS", "2"))
# Launches of an idle agent because its rig was told to act, per leg, before a person is asked.
GASTOWN_RUN_MAX_WAKES = int(os.environ.get("GASTOWN_RUN_MAX_WAKES", "3"))
GASTOWN_RUN_BACKOFF_SECONDS = float(os.environ.get("GASTOWN_RUN_BACKOFF_SECONDS", "10"))
GASTOWN_RUN_STOP_GRACE_SECONDS = float(os.environ.get("GASTOWN_RUN_STOP_GRACE_SECONDS", "10"))
# A budget reached stops its runs after their current step (their next usage report), or after
# this long at the latest (docs/runner.md, "Budgets").
GASTOWN_BUDGET_GRACE_SECONDS = float(os.environ.get("GASTOWN_BUDGET_GRACE_SECONDS", "60"))
# A Claude Code or Codex run that fails this soon, before any progress, failed at start (no key,
# no login, no binary): escalated at once, not restarted (runner/startup.py; 0: no time rule).
GASTOWN_RUN_START_SECONDS = float(os.environ.get("GASTOWN_RUN_START_SECONDS", "30"))
GASTOWN_RUN_LOG_DIR = Path(os.environ.get("GASTOWN_RUN_LOG_DIR") or DATA_DIR / "runs")
# Output kept per run log (head, then tail; 0: all) and how long logs are kept (0: for ever).
GASTOWN_RUN_LOG_MAX_BYTES = int(os.environ.get("GASTOWN_RUN_LOG_MAX_BYTES", str(50 * 1024**2)))
GASTOWN_RUN_LOG_RETENTION_DAYS = float(os.environ.get("GASTOWN_RUN_LOG_RETENTION_DAYS", "30"))

# --- Metrics and logs (docs/operations.md, "Metrics" and "Logs") ----------------------------
# /metrics answers an admin's API token or this bearer token (for a scraper); empty: admins only.
GASTOWN_METRICS_TOKEN = os.environ.get("GASTOWN_METRICS_TOKEN", "")
if GASTOWN_METRICS_TOKEN and len(GASTOWN_METRICS_TOKEN) < 20:
    raise ImproperlyConfigured("GASTOWN_METRICS_TOKEN must be at least 20 characters long.")
# Counters recorded in-process (requests, Celery tasks, websocket clients) are shared by the
# processes of one host through files here (prometheus_client's multiprocess mode), so a scrape
# of the web process also sees its workers. `none`: each process keeps its own.
_metrics_dir = os.environ.get("GASTOWN_METRICS_DIR", "").strip()
GASTOWN_METRICS_DIR: Path | None
if _metrics_dir.lower() == "none":
    GASTOWN_METRICS_DIR = None
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
else:
    GASTOWN_METRICS_DIR = Path(_metrics_dir).resolve() if _metrics_dir else DATA_DIR / "metrics"
    if _metrics_dir or DATA_DIR.is_dir():
        GASTOWN_METRICS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        # read by prometheus_client when it is first imported (only our code imports it, later)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(GASTOWN_METRICS_DIR)

# text: "time level logger: message"; json: one object per line (common/logs.py).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text").strip().lower() or "text"
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
# Beat tasks log at DEBUG when they found nothing to do (common/logs.py, QuietTicksFilter), and
# so do the per-rig syncs the sync tick fans out (one a live rig a minute).
GASTOWN_TICK_TASKS = frozenset(entry["task"] for entry in CELERY_BEAT_SCHEDULE.values()) | {
    "rigs.tasks.rig_sync"
}
# Python warnings (Celery's "running as root", say) go through logging: one format per line.
logging.captureWarnings(True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "common.logs.JsonFormatter"},
    },
    "filters": {"quiet_ticks": {"()": "common.logs.QuietTicksFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "daphne": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        # Celery's lines about a task (received, sent by beat, succeeded); filtered on the
        # loggers, not a handler, so a line lowered to DEBUG is lowered for every handler
        "celery.worker.strategy": {"filters": ["quiet_ticks"]},
        "celery.beat": {"filters": ["quiet_ticks"]},
        "celery.app.trace": {"filters": ["quiet_ticks"]},
    },
}
