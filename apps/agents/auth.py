"""Agent credentials and JWTs (PyJWT, HS256).

Agent secrets are stored with Django's password hashers (PBKDF2, slow on purpose); a successful
verification is remembered (process memory + cache, keyed by a SHA-256 of hash and secret) so
reconnect storms do not burn CPU on PBKDF2. Access tokens are verified without the database: which
agents are enabled is a versioned cache (`ACTIVE_AGENTS`) that the services writing agents bump, so
disabling an agent in admin locks its tokens out in this process at once and everywhere within
AGENT_ACTIVE_CHECK_SECONDS.

`authenticate_token` and `refresh` are async (the WebSocket consumer and the ASGI ingest await them);
sync callers (DRF's authentication class and views) bridge with `apps.core.aio.run`.
"""

import contextlib
import functools
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt
from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.core.cache import cache

from apps.core.cache import VersionedCache

ALGORITHM = "HS256"
_verified: dict[str, float] = {}


class AuthError(Exception):
    """Bad, expired or missing credentials: always a 401, never a 500."""

    def __init__(self, detail: str = "invalid token", code: str = "invalid_token"):
        super().__init__(detail)
        self.detail = detail
        self.code = code


@dataclass(frozen=True)
class AgentIdentity:
    agent_id: str
    jti: str = ""

    # DRF treats request.user as authenticated when this is true.
    is_authenticated = True
    is_staff = False

    @property
    def pk(self) -> str:
        return self.agent_id


def _load_active_agents(version: str) -> frozenset[str]:
    from apps.agents.models import Agent

    return frozenset(Agent.objects.filter(is_active=True).values_list("id", flat=True))


ACTIVE_AGENTS: VersionedCache[frozenset[str]] = VersionedCache(
    "agents.active", _load_active_agents, check_seconds=lambda: settings.AGENT_ACTIVE_CHECK_SECONDS
)


def signing_key() -> str:
    return settings.AGENT_JWT_SECRET or hashlib.sha256(f"agent-jwt:{settings.SECRET_KEY}".encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _verification_key(agent_id: str, secret_hash: str, raw: str) -> str:
    return "agent-auth:" + hashlib.sha256(f"{agent_id}\0{secret_hash}\0{raw}".encode()).hexdigest()


def verify_secret(agent, raw: str) -> bool:
    if not raw or not agent.secret_hash:
        return False
    key = _verification_key(agent.id, agent.secret_hash, raw)
    if key in _verified:
        return True
    try:
        remembered = cache.get(key)
    except Exception:  # Redis outage: fall back to the slow path
        remembered = None
    if remembered or check_password(raw, agent.secret_hash):
        _verified[key] = time.monotonic()
        if len(_verified) > 10_000:
            _verified.clear()
        if not remembered:
            with contextlib.suppress(Exception):  # Redis outage: only the shortcut is lost
                cache.set(key, 1, 24 * 3600)
        return True
    return False


def issue_tokens(agent_id: str) -> dict:
    now = int(time.time())
    access_ttl = settings.AGENT_ACCESS_TOKEN_TTL
    refresh_ttl = settings.AGENT_REFRESH_TOKEN_TTL
    key = signing_key()
    access = jwt.encode(
        {"sub": agent_id, "typ": "access", "iat": now, "exp": now + access_ttl, "jti": uuid.uuid4().hex},
        key,
        algorithm=ALGORITHM,
    )
    refresh_token = jwt.encode(
        {"sub": agent_id, "typ": "refresh", "iat": now, "exp": now + refresh_ttl, "jti": uuid.uuid4().hex},
        key,
        algorithm=ALGORITHM,
    )
    return {"access_token": access, "refresh_token": refresh_token, "token_type": "Bearer", "expires_in": access_ttl}


def decode(token: str, expected_type: str = "access") -> dict:
    if not token:
        raise AuthError("missing token", "missing_token")
    try:
        claims = dict(_verified_claims(token, signing_key()))
    except jwt.PyJWTError as exc:
        raise AuthError("invalid token", "invalid_token") from exc
    if claims["exp"] <= time.time():
        raise AuthError("token expired", "token_expired")
    if claims.get("typ") != expected_type:
        raise AuthError(f"not an {expected_type} token", "invalid_token")
    return claims


@functools.lru_cache(maxsize=4096)
def _verified_claims(token: str, key: str) -> dict:
    """A token's claims once its signature checks out (expiry is checked by the caller, every time). An agent
    sends the same access token with every request: verifying it once instead of per request is ≈ 8 % of the
    REST ingest's CPU (bench/README.md, issue 14). Invalid tokens raise and are not cached."""
    return jwt.decode(
        token, key, algorithms=[ALGORITHM], options={"require": ["sub", "exp", "typ"], "verify_exp": False}
    )


async def _require_active(agent_id: str) -> None:
    if agent_id not in await ACTIVE_AGENTS.get():
        raise AuthError("agent unknown or disabled", "agent_disabled")


async def authenticate_token(token: str) -> AgentIdentity:
    """The identity of a valid access token of an enabled agent; AuthError otherwise."""
    claims = decode(token, "access")
    await _require_active(claims["sub"])
    return AgentIdentity(claims["sub"], claims.get("jti", ""))


async def refresh(refresh_token: str) -> dict:
    """A new token pair for a valid refresh token of an enabled agent; AuthError otherwise."""
    claims = decode(refresh_token, "refresh")
    await _require_active(claims["sub"])
    return issue_tokens(claims["sub"])


def bearer(header_value: str | bytes | None) -> str:
    if isinstance(header_value, bytes):
        header_value = header_value.decode("latin-1")
    if not header_value:
        return ""
    scheme, _, token = header_value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def login(agent_id: str, api_key: str) -> dict:
    """Tokens for an enabled agent's id + secret (sync: the secret check is CPU, PBKDF2)."""
    from apps.agents.models import Agent

    agent = Agent.objects.filter(pk=agent_id).only("id", "secret_hash", "is_active").first() if agent_id else None
    if agent is None or not agent.is_active or not verify_secret(agent, api_key):
        raise AuthError("invalid agent_id or api_key", "invalid_credentials")
    return issue_tokens(agent.id)
