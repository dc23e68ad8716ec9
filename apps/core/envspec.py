"""What production needs from the environment; read by `validate_env` and `check --deploy`."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

from apps.core.keys import mask_secret

REQUIRED, RECOMMENDED, OPTIONAL = "required", "recommended", "optional"

LLM_PROVIDERS = ("qwen", "glm", "deepseek", "openai", "claude", "gemini", "moonshot", "ernie", "custom")


def _check_secret_key(value: str) -> str | None:
    if len(value) < 50 or len(set(value)) < 5:
        return "must be at least 50 characters of random text"
    return None


def _check_field_key(value: str) -> str | None:
    from apps.core.crypto import decode_key

    try:
        decode_key(value)
    except ImproperlyConfigured as exc:
        return str(exc)
    return None


def _check_url(*schemes: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        scheme = urlparse(value).scheme
        if scheme not in schemes:
            return f"scheme must be one of {', '.join(schemes)} (got {scheme or 'none'})"
        return None

    return check


@dataclass(frozen=True)
class EnvVar:
    name: str
    group: str
    help: str
    secret: bool = False
    check: Callable[[str], str | None] | None = None


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("SECRET_KEY", REQUIRED, "Django secret key", secret=True, check=_check_secret_key),
    EnvVar(
        "DATABASE_URL", REQUIRED, "PostgreSQL URL", secret=True, check=_check_url("postgres", "postgresql", "pgsql")
    ),
    EnvVar(
        "REDIS_URL",
        REQUIRED,
        "Redis URL (cache, channel layer, broker)",
        secret=True,
        check=_check_url("redis", "rediss", "unix"),
    ),
    EnvVar(
        "FIELD_ENCRYPTION_KEY",
        REQUIRED,
        "32-byte urlsafe-base64 AES key for encrypted columns",
        secret=True,
        check=_check_field_key,
    ),
    EnvVar("ERP_BASE_URL", RECOMMENDED, "ERP base URL", check=_check_url("http", "https")),
    EnvVar("ERP_USERNAME", RECOMMENDED, "ERP login name"),
    EnvVar("ERP_PASSWORD", RECOMMENDED, "ERP password", secret=True),
    EnvVar("ALLOWED_HOSTS", OPTIONAL, "comma-separated host names"),
    EnvVar("CSRF_TRUSTED_ORIGINS", OPTIONAL, "comma-separated origins for the admin behind a proxy"),
    EnvVar("METRICS_TOKEN", OPTIONAL, "bearer token for /metrics", secret=True),
    EnvVar("LOG_LEVEL", OPTIONAL, "logging level"),
    EnvVar("LOG_JSON", OPTIONAL, "JSON log lines"),
    EnvVar("TIME_ZONE", OPTIONAL, "time zone"),
    EnvVar("LANGUAGE_CODE", OPTIONAL, "default language"),
)


@dataclass(frozen=True)
class Finding:
    name: str
    group: str
    present: bool
    shown: str
    problem: str | None


def inspect_environment(environ: dict[str, str] | None = None) -> list[Finding]:
    environ = os.environ if environ is None else environ
    findings = []
    for var in ENV_VARS:
        value = environ.get(var.name, "")
        problem = var.check(value) if value and var.check else None
        shown = mask_secret(value) if var.secret else value
        findings.append(Finding(var.name, var.group, bool(value), shown, problem))
    keys = {f"{p.upper()}_API_KEY": environ.get(f"{p.upper()}_API_KEY", "") for p in LLM_PROVIDERS}
    present = [name for name, value in keys.items() if value]
    findings.append(
        Finding(
            "<PROVIDER>_API_KEY",
            RECOMMENDED,
            bool(present),
            ", ".join(f"{name}={mask_secret(keys[name])}" for name in present),
            None,
        )
    )
    return findings


def blocking_findings(findings: list[Finding]) -> list[Finding]:
    """Required variables that are missing, and any set variable whose value is malformed."""
    return [f for f in findings if (f.group == REQUIRED and not f.present) or f.problem]
