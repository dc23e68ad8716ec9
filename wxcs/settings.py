"""wxcs settings: one file, every knob from the environment (documented in .env.example).

Two run modes:
- embedded default (nothing set): SQLite under var/ and one embedded Redis on a unix socket that
  `manage.py run_platform` starts;
- production (DATABASE_URL / REDIS_URL set): PostgreSQL via psycopg 3 with Django's pool, Redis.

Under pytest, when the URLs are not set, the machine's PostgreSQL and Redis on 127.0.0.1 are used if
they answer, else SQLite and in-process backends; REQUIRE_SERVICES=1 turns "not answering" into an
error instead of a fallback.
"""

import re
import socket
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import environ
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from apps.core.envspec import LLM_PROVIDERS

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
ENV_FILE = BASE_DIR / ".env"
if ENV_FILE.exists():
    environ.Env.read_env(ENV_FILE)

TESTING = env.bool("WXCS_TESTING", default="pytest" in sys.modules)
VAR_DIR = Path(env.str("WXCS_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _reachable(url: str, timeout: float = 0.5) -> bool:
    """True when the TCP host:port (or unix socket) of a service URL accepts a connection."""
    parsed = urlparse(url)
    try:
        if parsed.scheme in ("unix", "redis+socket") or (parsed.path and not parsed.hostname):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(timeout)
                sock.connect(parsed.path)
        else:
            with socket.create_connection((parsed.hostname, parsed.port or 0), timeout=timeout):
                pass
    except OSError:
        return False
    return True


REQUIRE_SERVICES = env.bool("REQUIRE_SERVICES", default=False)
DATABASE_URL = env.str("DATABASE_URL", default="")
REDIS_URL = env.str("REDIS_URL", default="")
if TESTING:
    candidates = {
        "DATABASE_URL": DATABASE_URL or "postgres://postgres@127.0.0.1:5432/wxcs",
        "REDIS_URL": REDIS_URL or "redis://127.0.0.1:6379/0",
    }
    for name, url in candidates.items():
        if _reachable(url):
            globals()[name] = url
        elif REQUIRE_SERVICES:
            raise ImproperlyConfigured(f"REQUIRE_SERVICES=1 but {name} ({url}) does not answer")
        else:
            globals()[name] = ""

EMBEDDED = not DATABASE_URL and not REDIS_URL

# --- core -----------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    # Embedded default: a per-installation random key kept under var/ (validate_env demands a real
    # one in production).
    from apps.core.keys import load_or_create_key_file

    SECRET_KEY = load_or_create_key_file(VAR_DIR / "secret_key", nbytes=48)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
FIELD_ENCRYPTION_KEY = env.str("FIELD_ENCRYPTION_KEY", default="")
FIELD_ENCRYPTION_KEY_FILE = VAR_DIR / "field_encryption.key"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "django_prometheus",
    "csp",
    "axes",
    "apps.core",
    "apps.agents",
    "apps.customers",
    "apps.erp",
    "apps.messages",
    "apps.engines",
    "apps.knowledge",
    "apps.rules",
    "apps.llm_gateway",
    "apps.costs",
    "apps.monitoring",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes requires: turns its lockout into the response (429).
    "axes.middleware.AxesMiddleware",
]
# django-axes counts failed logins in the authentication backend chain.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

ROOT_URLCONF = "wxcs.urls"
WSGI_APPLICATION = "wxcs.wsgi.application"
ASGI_APPLICATION = "wxcs.asgi.application"

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
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------
DB_POOL_TIMEOUT = env.float("DB_POOL_TIMEOUT", default=10.0)
if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's psycopg pool: CONN_MAX_AGE under ASGI opened a connection per request thread.
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"] = {
            "pool": {
                "min_size": env.int("DB_POOL_MIN", default=2),
                "max_size": env.int("DB_POOL_MAX", default=20),
                "timeout": DB_POOL_TIMEOUT,
            },
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.str("SQLITE_PATH", default=str(VAR_DIR / "wxcs.sqlite3")),
            "OPTIONS": {
                "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=20),
                "transaction_mode": "IMMEDIATE",
                "init_command": (
                    "PRAGMA journal_mode=WAL;"
                    "PRAGMA synchronous=NORMAL;"
                    "PRAGMA cache_size=-64000;"
                    "PRAGMA temp_store=MEMORY;"
                    "PRAGMA mmap_size=268435456;"
                    "PRAGMA foreign_keys=ON;"
                ),
            },
        }
    }
    if TESTING:
        # A file (in WAL mode, with the busy timeout) like the embedded default's, not Django's in-memory test
        # database, whose shared cache refuses a second writer at once: the worker decides on several threads.
        import tempfile

        DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.mkdtemp(prefix="wxcs-test-db-")) / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Threads that run ORM work for async code (apps.core.db.run_db): at most this many connections in use by it.
DB_THREADS = env.int("DB_THREADS", default=8)
# psycopg AsyncConnectionPool per event loop (PostgreSQL) for the message path's hot statements.
DB_ASYNC_POOL_MAX = env.int("DB_ASYNC_POOL_MAX", default=10)

# --- redis: cache, channel layer, Celery broker ------------------------------------------------
# There is always a Redis: REDIS_URL's, else the embedded one (`make run` starts it on a unix socket;
# under pytest, when none answers, settings start a throw-away one for the test process).
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
if TESTING and not REDIS_URL:
    from apps.core.embedded_redis import start_for_tests

    EMBEDDED_REDIS_SOCKET = start_for_tests()
REDIS_TTL = env.int("REDIS_TTL", default=1800)
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="wxcs")
REDIS_CONNECT_TIMEOUT = env.float("REDIS_CONNECT_TIMEOUT", default=1.0)
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=1.0)
# redis.asyncio clients (one per event loop): their connections, and how long a reply may take (a pipeline
# of a loop turn's commands from hundreds of concurrent callers is longer than one command).
REDIS_ASYNC_MAX_CONNECTIONS = env.int("REDIS_ASYNC_MAX_CONNECTIONS", default=64)
REDIS_ASYNC_SOCKET_TIMEOUT = env.float("REDIS_ASYNC_SOCKET_TIMEOUT", default=5.0)
# How long a request waits for Redis work it can do without (ingest's throttle count and decision-queue push,
# the versioned caches' version check, e.g. token verification) before carrying on: during a Redis outage ingest
# still stores and answers 202 within about this time; the message is queued once Redis answers again.
REDIS_OPTIONAL_TIMEOUT = env.float("REDIS_OPTIONAL_TIMEOUT", default=1.0)

if REDIS_URL:
    cache_location, channel_host, broker_url = REDIS_URL, REDIS_URL, REDIS_URL
else:
    cache_location = f"unix://{EMBEDDED_REDIS_SOCKET}?db=0"
    channel_host = f"unix://{EMBEDDED_REDIS_SOCKET}?db=1"
    broker_url = f"redis+socket://{EMBEDDED_REDIS_SOCKET}?virtual_host=2"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": cache_location,
        "KEY_PREFIX": CACHE_KEY_PREFIX,
        "TIMEOUT": REDIS_TTL,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT, "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT},
    }
}
# Redis pub/sub: a push is one PUBLISH that every subscribed web process receives (0.34 ms of CPU per pushed
# frame, sender and receiver, against 1.85 ms for channels-redis' list-based layer: bench/README.md, issue 14);
# group membership lives as long as the socket (no group expiry). A frame published while no socket of the agent
# is subscribed is not kept: the outbox is, and is pushed again on every (re)connect.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": channel_host}], "prefix": f"{CACHE_KEY_PREFIX}:asgi"},
    }
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=broker_url)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_PREFETCH_MULTIPLIER", default=4)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "socket_timeout": 5,
    "socket_connect_timeout": 5,
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = env.str("TIME_ZONE", default="Asia/Shanghai")
# Threads: a task awaits the LLM on apps.core.aio without holding a DB connection, so many can wait at once;
# keep at least as many as LLM calls to have in flight (64 threads × 2 s answers = 32 messages/s at most).
CELERY_WORKER_CONCURRENCY = env.int("CELERY_WORKER_CONCURRENCY", default=256)
CELERY_WORKER_POOL = env.str("CELERY_WORKER_POOL", default="threads")
# The sync Redis client's pool (django-redis: the cache, apps.core.redis.client()), sized for every thread of a
# process that may use it at once: Celery's threads, the run_db threads (DB_THREADS) and a few background ones
# (trace and cost writers, beat's ticks). A caller beyond that waits up to REDIS_POOL_TIMEOUT s for a connection
# instead of failing: redis-py's default pool (100, failing with "Too many connections") made a burst retry
# decisions by the thousand.
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=CELERY_WORKER_CONCURRENCY + DB_THREADS + 16)
REDIS_POOL_TIMEOUT = env.float("REDIS_POOL_TIMEOUT", default=5.0)
CACHES["default"]["OPTIONS"] |= {
    "CONNECTION_POOL_CLASS": "redis.BlockingConnectionPool",
    "CONNECTION_POOL_KWARGS": {"max_connections": REDIS_MAX_CONNECTIONS, "timeout": REDIS_POOL_TIMEOUT},
}
# Worker processes `make run` starts. One per core for throughput (each process has one GIL and one Celery
# consumer: bench/README.md, issue 4); 1 by default because mem0's local Qdrant folder allows one process.
CELERY_WORKER_PROCESSES = env.int("CELERY_WORKER_PROCESSES", default=1)

# --- i18n -----------------------------------------------------------------------------------
LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="zh-hans")
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
TIME_ZONE = env.str("TIME_ZONE", default="Asia/Shanghai")
USE_I18N = True
USE_TZ = True
LOCALE_PATHS = [BASE_DIR / "locale"]

# --- static ---------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Daphne serves /static/ itself in the embedded mode; behind nginx in production set it off.
SERVE_STATIC = env.bool("SERVE_STATIC", default=EMBEDDED or DEBUG)

# --- security -------------------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Docker's health checks and Prometheus reach the containers over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = env.list("SECURE_REDIRECT_EXEMPT", default=[r"^healthz$", r"^readyz$", r"^metrics$"])
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
X_FRAME_OPTIONS = "DENY"  # no page of ours is framed (admin's related-object pop-ups are windows)
# Content-Security-Policy (django-csp) on every Django response, and on the ASGI ingest door (apps.core.security):
# scripts and style sheets from this origin only (an inline <script>/<style> needs `nonce="{{ request.csp_nonce }}"`);
# inline style *attributes* stay allowed: admin pages colour values with them, and they cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src-elem": [SELF, NONCE],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],  # the dashboard's WebSocket is same-origin
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- REST -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Every operation declares the error bodies the exception handler sends ({detail, code}).
    "DEFAULT_SCHEMA_CLASS": "apps.core.openapi.ErrorDocumentingAutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The API speaks JSON only (PROTOCOL.md); anything else is a 415 {detail, code}.
    "DEFAULT_PARSER_CLASSES": ["apps.core.inputs.LimitedJSONParser"],
    "UNAUTHENTICATED_USER": None,
}
# Input limits (apps.core.inputs; apps/messages/PROTOCOL.md "Limits and errors"): JSON nesting depth (400
# `too_deep`), body bytes of a DRF API call (413), how far ahead of the server's clock a timestamp may be (s;
# the earliest is 2000-01-01), bytes of one WebSocket message from an agent (larger: `too_large` error frame,
# close 4413; Daphne is started with twice this as its transport limit by apps.core.webserver), bytes of a
# heartbeat as JSON (413 / `too_large`).
JSON_MAX_DEPTH = env.int("JSON_MAX_DEPTH", default=32)
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=64 * 1024)
TIMESTAMP_MAX_FUTURE = env.int("TIMESTAMP_MAX_FUTURE", default=86400)
WS_MAX_MESSAGE_BYTES = env.int("WS_MAX_MESSAGE_BYTES", default=1024 * 1024)
HEARTBEAT_MAX_BYTES = env.int("HEARTBEAT_MAX_BYTES", default=16 * 1024)
SPECTACULAR_SETTINGS = {
    "TITLE": "wxcs API",
    "DESCRIPTION": "微信客服中台 REST API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # POST /api/v1/messages is served from ASGI, outside the URLconf: described by its own hook.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.messages.openapi.document_ingest",
    ],
}

# --- logging --------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_JSON = env.bool("LOG_JSON", default=False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # trace_id (apps.core.tracing) on every record; records carrying one are also kept per trace.
    "filters": {"trace": {"()": "apps.core.tracing.TraceIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(trace_id)s] %(message)s"},
        "json": {"()": "apps.core.tracing.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_JSON else "plain",
            "filters": ["trace"],
        },
        "trace_store": {"class": "apps.monitoring.tracing.TraceStoreHandler", "filters": ["trace"]},
    },
    "root": {"handlers": ["console", "trace_store"], "level": LOG_LEVEL},
    # httpx (and httpx2, under openai's aiohttp transport) log every request URL at INFO: robot/webhook
    # URLs carry access tokens, and a log line per LLM call costs CPU on the hot path.
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
    },
}

# --- demo / run_platform ---------------------------------------------------------------------
WEB_HOST = env.str("WEB_HOST", default="127.0.0.1")
WEB_PORT = env.int("WEB_PORT", default=8000)
DEMO_SUPERVISOR_USERNAME = env.str("DEMO_SUPERVISOR_USERNAME", default="supervisor")
# `make run` starts a simulator agent with scripted customers (python -m agent --simulate).
RUN_DEMO_AGENT = env.bool("RUN_DEMO_AGENT", default=True)

# --- engines (apps.engines) -------------------------------------------------------------------
# The engine answering when nothing was switched in admin yet: "chat", "mem0" or "offline". Unset: "chat"
# when an LLM provider key is in the environment, else "offline" (knowledge-base answers with their own
# confidence, instead of a chat engine whose every reply would wait for review without a model).
ENGINE_DEFAULT = env.str(
    "ENGINE_DEFAULT",
    default="chat" if any(env.str(f"{name.upper()}_API_KEY", default="") for name in LLM_PROVIDERS) else "offline",
)
# How often a process checks the Redis switch-version key (a switch reaches every process within it).
ENGINE_SWITCH_CHECK_SECONDS = env.float("ENGINE_SWITCH_CHECK_SECONDS", default=0.2)
ENGINE_HEALTH_CACHE_SECONDS = env.float("ENGINE_HEALTH_CACHE_SECONDS", default=10.0)
ENGINE_MEMORY_WINDOW_MINUTES = env.int("ENGINE_MEMORY_WINDOW_MINUTES", default=30)
ENGINE_MEMORY_MAX_TURNS = env.int("ENGINE_MEMORY_MAX_TURNS", default=20)
ENGINE_MEMORY_MAX_FACTS = env.int("ENGINE_MEMORY_MAX_FACTS", default=10)
ENGINE_KNOWLEDGE_HITS = env.int("ENGINE_KNOWLEDGE_HITS", default=4)
ENGINE_MAX_TOOL_ROUNDS = env.int("ENGINE_MAX_TOOL_ROUNDS", default=4)
ENGINE_LLM_TIMEOUT = env.float("ENGINE_LLM_TIMEOUT", default=30.0)
# Below this knowledge score the offline engine apologises and hands off instead of answering.
ENGINE_OFFLINE_MIN_SCORE = env.float("ENGINE_OFFLINE_MIN_SCORE", default=0.3)
# Mem0Engine: local vector store under var/, its own thread pool (mem0's API is blocking).
MEM0_DIR = Path(env.str("MEM0_DIR", default=str(VAR_DIR / "mem0")))
MEM0_THREADS = env.int("MEM0_THREADS", default=4)
# Empty = the gateway's configured provider for the route below.
MEM0_LLM_ROUTE = env.str("MEM0_LLM_ROUTE", default="default")
MEM0_EMBEDDING_ROUTE = env.str("MEM0_EMBEDDING_ROUTE", default="embedding")
MEM0_BASE_URL = env.str("MEM0_BASE_URL", default="")
MEM0_API_KEY = env.str("MEM0_API_KEY", default="")
MEM0_LLM_MODEL = env.str("MEM0_LLM_MODEL", default="")
MEM0_EMBEDDING_MODEL = env.str("MEM0_EMBEDDING_MODEL", default="")
MEM0_EMBEDDING_DIMS = env.int("MEM0_EMBEDDING_DIMS", default=0)
# A Qdrant server for mem0 shared by several processes (empty = local path under MEM0_DIR, one process).
MEM0_QDRANT_URL = env.str("MEM0_QDRANT_URL", default="")

# --- monitoring: metrics, tracing, dashboard, alerts (apps.monitoring) -------------------------
# Metrics from every process (Daphne, Celery worker/beat) meet in one prometheus_client multiprocess
# directory that /metrics aggregates; it must be in the environment before the first metric exists,
# hence set here. run_platform empties it at start. Empty = single-process metrics (tests).
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="" if TESTING else str(VAR_DIR / "prometheus"))
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
    env.ENVIRON["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
# /metrics answers a bearer token or a client address in the allow-list (addresses or CIDR networks).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
# A Celery worker in its own container serves its metrics on this port (0 = off; same host: /metrics has them).
METRICS_WORKER_PORT = env.int("METRICS_WORKER_PORT", default=0)
# ...on this address: loopback unless set (the exporter has no authentication; docker-compose sets 0.0.0.0 on its
# private network, where Prometheus scrapes it, and publishes no port for it).
METRICS_WORKER_ADDR = env.str("METRICS_WORKER_ADDR", default="127.0.0.1")
# django-prometheus query metrics (count, errors, duration) through an execute wrapper on every connection.
METRICS_DB_QUERIES = env.bool("METRICS_DB_QUERIES", default=True)
DASHBOARD_INTERVAL = env.float("DASHBOARD_INTERVAL", default=1.0)
TRACE_MAX_EVENTS = env.int("TRACE_MAX_EVENTS", default=500)
TRACE_TTL = env.int("TRACE_TTL", default=7 * 86400)
# Trace lines are queued and written by a background thread this often, in one pipeline for all traces.
TRACE_FLUSH_SECONDS = env.float("TRACE_FLUSH_SECONDS", default=0.1)
TRACE_BUFFER_MAX = env.int("TRACE_BUFFER_MAX", default=20000)
ALERT_HTTP_TIMEOUT = env.float("ALERT_HTTP_TIMEOUT", default=5.0)
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="wxcs@localhost")

# --- ERP and customers (apps.erp, apps.customers) ----------------------------------------------
# Credentials: an active ErpConnection row in admin wins; else these; else (nothing set) the bundled
# simulator on ERP_SIMULATOR_PORT, which `make run` starts as a process.
ERP_BASE_URL = env.str("ERP_BASE_URL", default="")
ERP_USERNAME = env.str("ERP_USERNAME", default="")
ERP_PASSWORD = env.str("ERP_PASSWORD", default="")
ERP_SIMULATOR_PORT = env.int("ERP_SIMULATOR_PORT", default=8769)
ERP_TIMEOUT = env.float("ERP_TIMEOUT", default=15.0)
ERP_RETRIES = env.int("ERP_RETRIES", default=3)
ERP_RETRY_BACKOFF = env.float("ERP_RETRY_BACKOFF", default=0.5)
ERP_PAGE_SIZE = env.int("ERP_PAGE_SIZE", default=500)
# The ERP's sessions last about 2 h; the cached token is dropped a little earlier.
ERP_SESSION_TTL = env.int("ERP_SESSION_TTL", default=6600)
# Celery beat runs sync_erp every this many minutes (0 = no periodic sync).
ERP_SYNC_INTERVAL_MINUTES = env.int("ERP_SYNC_INTERVAL_MINUTES", default=60)
ERP_SYNC_LOCK_SECONDS = env.int("ERP_SYNC_LOCK_SECONDS", default=1800)
# Lists a sync reads in parallel (customers, contacts, contracts, the source/value passes).
ERP_FETCH_THREADS = env.int("ERP_FETCH_THREADS", default=4)

# --- LLM gateway and costs (apps.llm_gateway, apps.costs) ----------------------------------------
# Providers from the environment: <NAME>_API_KEY / _API_BASE / _MODEL / _TIMEOUT (presets fill the rest;
# `custom` needs _API_BASE and _MODEL, its key is optional). Admin Provider rows override these per name.
LLM_PROVIDER_NAMES = ("qwen", "glm", "deepseek", "openai", "claude", "gemini", "moonshot", "ernie", "custom")
LLM_PROVIDERS = {
    name: {
        key: value
        for key, value in {
            "api_key": env.str(f"{name.upper()}_API_KEY", default=""),
            "api_base": env.str(f"{name.upper()}_API_BASE", default=""),
            "model": env.str(f"{name.upper()}_MODEL", default=""),
            "timeout": env.str(f"{name.upper()}_TIMEOUT", default=""),
        }.items()
        if value
    }
    for name in LLM_PROVIDER_NAMES
}
LLM_PROVIDERS = {name: values for name, values in LLM_PROVIDERS.items() if values}
LLM_ROUTES: dict = {}  # {"default": [{"provider": ..., "model": ...}, ...]}; empty = admin routes / built-ins
LLM_TIMEOUT = env.float("LLM_TIMEOUT", default=30.0)  # per attempt, unless the provider / route entry says
LLM_TOTAL_TIMEOUT = env.float("LLM_TOTAL_TIMEOUT", default=60.0)  # whole complete() call, all attempts
LLM_RETRIES = env.int("LLM_RETRIES", default=2)  # per route entry, on 429 / 5xx / timeouts
LLM_BACKOFF_BASE = env.float("LLM_BACKOFF_BASE", default=0.5)
LLM_BACKOFF_MAX = env.float("LLM_BACKOFF_MAX", default=8.0)
LLM_RETRY_AFTER_MAX = env.float("LLM_RETRY_AFTER_MAX", default=10.0)  # a longer Retry-After → next entry
LLM_CIRCUIT_FAILURES = env.int("LLM_CIRCUIT_FAILURES", default=5)
LLM_CIRCUIT_WINDOW = env.float("LLM_CIRCUIT_WINDOW", default=60.0)
LLM_CIRCUIT_COOLDOWN = env.float("LLM_CIRCUIT_COOLDOWN", default=30.0)
LLM_CIRCUIT_PROBE_TIMEOUT = env.float("LLM_CIRCUIT_PROBE_TIMEOUT", default=30.0)
# Seconds a process may serve providers / routes / prices / budgets before checking whether admin changed them
# (the saving process sees a change at once). Under pytest every read checks (tests flush Redis between them).
LLM_CONFIG_TTL = env.float("LLM_CONFIG_TTL", default=0.0 if TESTING else 5.0)
LLM_ESTIMATE_OUTPUT_TOKENS = env.int("LLM_ESTIMATE_OUTPUT_TOKENS", default=512)  # budget reservation per call
# The offline provider: `offline_answer(messages) -> str | None` (sync or async), else the apology.
LLM_OFFLINE_ANSWERER = env.str("LLM_OFFLINE_ANSWERER", default="apps.knowledge.services.offline_answer")
LLM_OFFLINE_APOLOGY = env.str(
    "LLM_OFFLINE_APOLOGY", default="抱歉，智能助手暂时无法回答您的问题，已为您通知人工客服，请稍候。"
)
COST_DEFAULT_INPUT_PER_1K = env.float("COST_DEFAULT_INPUT_PER_1K", default=0.05)  # unknown models (flagged)
COST_DEFAULT_OUTPUT_PER_1K = env.float("COST_DEFAULT_OUTPUT_PER_1K", default=0.1)
COST_GLOBAL_DAILY_LIMIT = env.float("COST_GLOBAL_DAILY_LIMIT", default=100.0)  # the seeded global budget
COST_FLUSH_BATCH = env.int("COST_FLUSH_BATCH", default=200)  # queued usage records that trigger a flush
COST_FLUSH_SECONDS = env.float("COST_FLUSH_SECONDS", default=2.0)
# Write queued usage records from the gateway process too (beat does it every 5 s); off under pytest, where
# tests call flush_usage() themselves (a background write would outlive the test transaction).
COST_FLUSH_AUTO = env.bool("COST_FLUSH_AUTO", default=not TESTING)

# --- agents (apps.agents) ----------------------------------------------------------------------
# HS256 signing key for agent JWTs; empty = derived from SECRET_KEY. Token lifetimes in seconds.
AGENT_JWT_SECRET = env.str("AGENT_JWT_SECRET", default="")
AGENT_ACCESS_TOKEN_TTL = env.int("AGENT_ACCESS_TOKEN_TTL", default=3600)
AGENT_REFRESH_TOKEN_TTL = env.int("AGENT_REFRESH_TOKEN_TTL", default=30 * 24 * 3600)
# Heartbeat interval (s) given to newly registered agents.
AGENT_HEARTBEAT_INTERVAL = env.int("AGENT_HEARTBEAT_INTERVAL", default=30)
# How often a process checks whether admin disabled or deleted an agent (its tokens are refused from then on).
AGENT_ACTIVE_CHECK_SECONDS = env.float("AGENT_ACTIVE_CHECK_SECONDS", default=2.0)
# An open agent WebSocket re-checks its agent (enabled, secret version) this often (s); disabling or rotating
# also closes it at once by an event, this is the backstop. The access token's expiry closes it at that moment.
AGENT_SOCKET_RECHECK_SECONDS = env.float("AGENT_SOCKET_RECHECK_SECONDS", default=15.0)
# One sending socket per agent (apps/agents/sockets.py): the current socket's lease in Redis lives this long (s)
# and is renewed every third of it. A web process that dies without closing its sockets blocks another
# installation of the agent for at most this long; the same installation takes over at once.
AGENT_SOCKET_LEASE_SECONDS = env.float("AGENT_SOCKET_LEASE_SECONDS", default=30.0)
# Login throttling (POST /api/v1/auth/login): attempts per agent id and per client address in a window of
# AGENT_LOGIN_WINDOW seconds (a successful login is not counted); more get 429 + Retry-After. 0 = no limit.
AGENT_LOGIN_WINDOW = env.int("AGENT_LOGIN_WINDOW", default=300)
AGENT_LOGIN_LIMIT_PER_ID = env.int("AGENT_LOGIN_LIMIT_PER_ID", default=10)
AGENT_LOGIN_LIMIT_PER_ADDRESS = env.int("AGENT_LOGIN_LIMIT_PER_ADDRESS", default=30)
# POST /api/v1/auth/refresh per client address in the same window (refresh is hourly per agent).
AGENT_REFRESH_LIMIT_PER_ADDRESS = env.int("AGENT_REFRESH_LIMIT_PER_ADDRESS", default=120)
# Secret hashing (PBKDF2) per process: at most this many at once; a login waits up to AGENT_LOGIN_HASH_WAIT s
# for a slot, and with AGENT_LOGIN_MAX_WAITING already waiting it gets 429 (Retry-After:
# AGENT_LOGIN_BUSY_RETRY_AFTER) at once. Keeps a login flood from taking the CPU other agents' requests need.
AGENT_LOGIN_HASH_CONCURRENCY = env.int("AGENT_LOGIN_HASH_CONCURRENCY", default=1)
AGENT_LOGIN_HASH_WAIT = env.float("AGENT_LOGIN_HASH_WAIT", default=5.0)
AGENT_LOGIN_MAX_WAITING = env.int("AGENT_LOGIN_MAX_WAITING", default=8)
AGENT_LOGIN_BUSY_RETRY_AFTER = env.int("AGENT_LOGIN_BUSY_RETRY_AFTER", default=5)
# Client address for throttling (agent and admin logins): the number of trusted reverse proxies in front of
# the web processes (0: REMOTE_ADDR; n: the n-th address from the right of X-Forwarded-For).
CLIENT_IP_PROXY_COUNT = env.int("CLIENT_IP_PROXY_COUNT", default=0)

# --- admin login throttling (django-axes) ----------------------------------------------------------------
# Failed admin logins per username and per client address before a lockout of AXES_COOLOFF_MINUTES
# (answered 429 with Retry-After). Lockouts are listed (and can be deleted) in admin under Axes.
# Off by default under pytest only: Django's test client logs in without a request, which axes refuses (the
# throttling tests turn it on; live test servers run with it on).
AXES_ENABLED = env.bool("AXES_ENABLED", default=not TESTING)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_MINUTES = env.int("AXES_COOLOFF_MINUTES", default=15)
AXES_COOLOFF_TIME = timedelta(minutes=AXES_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "apps.core.views.login_locked_out"
AXES_CLIENT_IP_CALLABLE = "apps.core.ratelimit.client_address"
AXES_SENSITIVE_PARAMETERS = ["password"]

# --- message pipeline (apps.messages) -------------------------------------------------------------
# Replies below this confidence wait for a supervisor instead of being sent.
REVIEW_CONFIDENCE_THRESHOLD = env.float("REVIEW_CONFIDENCE_THRESHOLD", default=0.6)
# Ingest limits: characters per message, request body bytes, messages per WebSocket batch.
MESSAGE_MAX_CHARS = env.int("MESSAGE_MAX_CHARS", default=4000)
INGEST_MAX_BODY_BYTES = env.int("INGEST_MAX_BODY_BYTES", default=256 * 1024)
INGEST_MAX_BATCH = env.int("INGEST_MAX_BATCH", default=200)
# Per-agent throttle: messages per window of this many seconds (0 = off).
INGEST_RATE_LIMIT = env.int("INGEST_RATE_LIMIT", default=1200)
INGEST_RATE_WINDOW = env.int("INGEST_RATE_WINDOW", default=60)
# Longest `?wait=N` (s) of POST /api/v1/messages.
INGEST_MAX_WAIT = env.int("INGEST_MAX_WAIT", default=30)
# In a group chat only messages that @ the agent are answered (others are recorded, ignored).
GROUP_REPLY_REQUIRES_AT = env.bool("GROUP_REPLY_REQUIRES_AT", default=True)
# A message claimed for a decision this many seconds ago and still not decided was abandoned (its worker died)
# and is claimed again; must exceed one decision's time (the engine's timeout included).
PIPELINE_CLAIM_TTL = env.int("PIPELINE_CLAIM_TTL", default=120)
# Beat re-queues messages left undecided this long (crashed worker, Redis away when they were queued).
PIPELINE_SWEEP_AFTER = env.int("PIPELINE_SWEEP_AFTER", default=120)
PIPELINE_HISTORY_TURNS = env.int("PIPELINE_HISTORY_TURNS", default=10)
PIPELINE_ENGINE_TIMEOUT = env.float("PIPELINE_ENGINE_TIMEOUT", default=90.0)
# Decision attempts (after transient errors) before a message is handed to a human.
PIPELINE_MAX_RETRIES = env.int("PIPELINE_MAX_RETRIES", default=5)
# Decisions in flight per worker process (each mostly awaiting its LLM call), and entries taken from the
# decision queue at once.
PIPELINE_CONCURRENCY = env.int("PIPELINE_CONCURRENCY", default=256)
PIPELINE_POP_BATCH = env.int("PIPELINE_POP_BATCH", default=50)
# A customer's consecutive messages in one conversation, each arriving within this many milliseconds of the one
# before, are one question: one decision, one reply (to the last). Every reply waits this long after the newest
# fragment; 0 = each message on its own. Tests default to 0 (they opt in where they test fragments).
PIPELINE_DEBOUNCE_MS = env.int("PIPELINE_DEBOUNCE_MS", default=0 if TESTING else 1500)
# Unacked replies pushed again on each (re)connect of an agent (and listed by GET /api/v1/replies).
OUTBOX_PAGE = env.int("OUTBOX_PAGE", default=500)
# While its agent is connected, an unacked reply last pushed this many seconds ago is pushed again by beat's
# outbox sweep (every OUTBOX_SWEEP_INTERVAL s): a push is a fire-and-forget publish that can be lost. Such replies
# are counted on /metrics (wxcs_outbox_stuck_replies, wxcs_outbox_stuck_oldest_seconds per agent).
OUTBOX_REDELIVER_AFTER = env.int("OUTBOX_REDELIVER_AFTER", default=10)
OUTBOX_SWEEP_INTERVAL = env.int("OUTBOX_SWEEP_INTERVAL", default=5)

# --- knowledge base (apps.knowledge) --------------------------------------------------------------
# How often a process compares its index with the Redis version key (ms); edits in this process are seen
# at once, other processes' edits within this delay. Under pytest every query checks (tests roll back or
# flush the database without signals and empty Redis between tests: no test may see another's index).
KNOWLEDGE_VERSION_CHECK_MS = env.float("KNOWLEDGE_VERSION_CHECK_MS", default=0.0 if TESTING else 500.0)
# Hybrid fusion: score = alpha * vector + (1 - alpha) * keyword; hits at or below KNOWLEDGE_MIN_SCORE dropped.
KNOWLEDGE_HYBRID_ALPHA = env.float("KNOWLEDGE_HYBRID_ALPHA", default=0.5)
KNOWLEDGE_MIN_SCORE = env.float("KNOWLEDGE_MIN_SCORE", default=0.05)
# The offline answer (no LLM): the best hit's answer when its keyword score reaches this. On the FAQ
# paraphrases 0.2 answers 92 % of the questions whose best hit is right and lets 4 % wrong ones through.
KNOWLEDGE_OFFLINE_MIN_SCORE = env.float("KNOWLEDGE_OFFLINE_MIN_SCORE", default=0.2)
# The gateway route that embeds, the per-query embedding timeout (s) and the batch size for entries.
KNOWLEDGE_EMBEDDING_ROUTE = env.str("KNOWLEDGE_EMBEDDING_ROUTE", default="embedding")
KNOWLEDGE_EMBED_TIMEOUT = env.float("KNOWLEDGE_EMBED_TIMEOUT", default=2.0)
KNOWLEDGE_EMBED_BATCH = env.int("KNOWLEDGE_EMBED_BATCH", default=64)
# After a failed query embedding, skip the vector path for this many seconds (keyword only).
KNOWLEDGE_EMBED_BACKOFF = env.float("KNOWLEDGE_EMBED_BACKOFF", default=5.0)
# List questions answered by keyword because the embedding provider failed as gaps (admin).
KNOWLEDGE_RECORD_FALLBACK_GAPS = env.bool("KNOWLEDGE_RECORD_FALLBACK_GAPS", default=True)
# Document import: default chunk size and overlap, in characters.
KNOWLEDGE_CHUNK_SIZE = env.int("KNOWLEDGE_CHUNK_SIZE", default=400)
KNOWLEDGE_CHUNK_OVERLAP = env.int("KNOWLEDGE_CHUNK_OVERLAP", default=80)
# Celery workers build the knowledge index and load jieba's dictionary (1–3 s) on a background thread at
# start, so the first customer question does not wait; off under pytest (tests build small indexes).
KNOWLEDGE_WARM_ON_START = env.bool("KNOWLEDGE_WARM_ON_START", default=not TESTING)

# --- rules (apps.rules) ---------------------------------------------------------------------------
# How often a process compares its compiled rules with the Redis key `rules:version` (ms); changes made in
# this process are seen at once. Under pytest every evaluation checks (tests flush without signals).
RULES_VERSION_CHECK_MS = env.float("RULES_VERSION_CHECK_MS", default=0.0 if TESTING else 500.0)
# Time zone of rule time windows and weekdays.
RULES_TIMEZONE = env.str("RULES_TIMEZONE", default="Asia/Shanghai")
# WeChat nicknames allowed to send #mute / #unmute / #status, besides the admin's list; separated by
# commas (, ， 、) or newlines, like the admin's lists.
RULES_ADMIN_NICKNAMES = [
    name.strip() for name in re.split(r"[\n,，、]+", env.str("RULES_ADMIN_NICKNAMES", default="")) if name.strip()
]
