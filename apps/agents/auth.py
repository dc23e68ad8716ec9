"""Agent credentials and JWTs (PyJWT, HS256).

Agent secrets are stored with Django's password hashers (PBKDF2, slow on purpose); a successful
verification is remembered (process memory + cache, keyed by a SHA-256 of hash and secret) so
reconnect storms do not burn CPU on PBKDF2. A failed login costs one hash whether or not the id exists
(unknown ids are checked against a dummy hash), at most AGENT_LOGIN_HASH_CONCURRENCY hashes run at once
(the rest wait briefly or get a 429), and logins are throttled per agent id and per client address before
any hashing (`apps.core.ratelimit`).

Every token carries the agent's `secret_version` (`sv`); rotating the secret bumps it, so every earlier token
is refused. Access tokens are verified without the database: which agents are enabled, and their secret
versions, are a versioned cache (`ACTIVE_AGENTS`) that the services writing agents bump, so disabling an agent
or rotating its secret locks its tokens out in this process at once and everywhere within
AGENT_ACTIVE_CHECK_SECONDS (open sockets are closed by an event, see services).

Refresh tokens rotate: each belongs to a family (one per login, `RefreshTokenFamily`, `fam` claim) whose
current token is the only one that refreshes; presenting a spent one revokes the family.

`authenticate_token` and `check_current` are async (the WebSocket consumer and the ASGI ingest await them);
DRF's authentication class bridges with `apps.core.aio.run`. `login` and `refresh` are sync (the hash and
the family's row lock run in the view's thread).
"""

import contextlib
import functools
import hashlib
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.core.cache import cache
from django.db import transaction

from apps.core import ratelimit
from apps.core.cache import VersionedCache

logger = logging.getLogger("wxcs.agents.auth")
ALGORITHM = "HS256"
_verified: dict[str, float] = {}


class AuthError(Exception):
    """Bad, expired, revoked or missing credentials: always a 401, never a 500."""

    def __init__(self, detail: str = "invalid token", code: str = "invalid_token"):
        super().__init__(detail)
        self.detail = detail
        self.code = code


class Throttled(Exception):
    """Too many login attempts for this agent id or client address (or too many hashes queued): a 429."""

    def __init__(self, retry_after: int, detail: str = "too many login attempts", code: str = "throttled"):
        super().__init__(detail)
        self.retry_after = retry_after
        self.detail = detail
        self.code = code


@dataclass(frozen=True)
class AgentIdentity:
    agent_id: str
    jti: str = ""
    expires_at: float = 0.0
    secret_version: int = 0

    # DRF treats request.user as authenticated when this is true.
    is_authenticated = True
    is_staff = False

    @property
    def pk(self) -> str:
        return self.agent_id


def _load_active_agents(version: str) -> dict[str, int]:
    from apps.agents.models import Agent

    return dict(Agent.objects.filter(is_active=True).values_list("id", "secret_version"))


# Enabled agent id → its secret version.
ACTIVE_AGENTS: VersionedCache[dict[str, int]] = VersionedCache(
    "agents.active", _load_active_agents, check_seconds=lambda: settings.AGENT_ACTIVE_CHECK_SECONDS
)


def signing_key() -> str:
    return settings.AGENT_JWT_SECRET or hashlib.sha256(f"agent-jwt:{settings.SECRET_KEY}".encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


# --- secrets ---------------------------------------------------------------------------------------
def _verification_key(agent_id: str, secret_hash: str, raw: str) -> str:
    return "agent-auth:" + hashlib.sha256(f"{agent_id}\0{secret_hash}\0{raw}".encode()).hexdigest()


def _remembered(key: str) -> bool:
    if key in _verified:
        return True
    try:
        return bool(cache.get(key))
    except Exception:  # Redis outage: fall back to the slow path
        return False


def _remember(key: str) -> None:
    _verified[key] = time.monotonic()
    if len(_verified) > 10_000:
        _verified.clear()
    with contextlib.suppress(Exception):  # Redis outage: only the shortcut is lost
        cache.set(key, 1, 24 * 3600)


@functools.cache
def _dummy_hash() -> str:
    """A hash of nothing anyone knows, with the current hasher's cost: what an unknown id is checked against."""
    return make_password(secrets.token_urlsafe(32))


class _HashGate:
    """At most AGENT_LOGIN_HASH_CONCURRENCY password hashes at once in this process (a login flood must leave CPU
    for everyone else); a caller waits up to AGENT_LOGIN_HASH_WAIT seconds, and when AGENT_LOGIN_MAX_WAITING
    are already waiting it is refused at once (cheap)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._semaphore: threading.BoundedSemaphore | None = None
        self._waiting = 0

    @contextlib.contextmanager
    def slot(self):
        with self._lock:
            if self._semaphore is None:
                self._semaphore = threading.BoundedSemaphore(settings.AGENT_LOGIN_HASH_CONCURRENCY)
            acquired = self._semaphore.acquire(blocking=False)
            if not acquired and self._waiting >= settings.AGENT_LOGIN_MAX_WAITING:
                raise login_busy()
            self._waiting += not acquired
        if not acquired:
            try:
                acquired = self._semaphore.acquire(timeout=settings.AGENT_LOGIN_HASH_WAIT)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not acquired:
                raise login_busy()
        try:
            yield
        finally:
            self._semaphore.release()


_HASHING = _HashGate()


def verify_secret(agent, raw: str) -> bool:
    """Whether `raw` is the secret of `agent` (None: an unknown or disabled id, checked against a dummy hash so
    that it costs the same)."""
    secret_hash = agent.secret_hash if agent is not None else ""
    if not raw:
        return False
    key = _verification_key(agent.id, secret_hash, raw) if agent is not None and secret_hash else ""
    if key and _remembered(key):
        return True
    with _HASHING.slot():
        ok = check_password(raw, secret_hash or _dummy_hash()) and bool(key)
    if ok:
        _remember(key)
    return ok


# --- tokens ----------------------------------------------------------------------------------------
def issue_tokens(agent_id: str, secret_version: int = 1, family: str = "", refresh_jti: str = "") -> dict:
    """A signed access + refresh pair for the agent's `secret_version` (1: a never rotated secret). `family` /
    `refresh_jti`: the refresh token's family and id, as stored by `new_token_family` / `refresh` (a refresh
    token outside a stored family is refused)."""
    now = int(time.time())
    access_ttl = settings.AGENT_ACCESS_TOKEN_TTL
    key = signing_key()
    common = {"sub": agent_id, "sv": secret_version, "iat": now}
    access = jwt.encode(
        {**common, "typ": "access", "exp": now + access_ttl, "jti": uuid.uuid4().hex}, key, algorithm=ALGORITHM
    )
    refresh_token = jwt.encode(
        {
            **common,
            "typ": "refresh",
            "exp": now + settings.AGENT_REFRESH_TOKEN_TTL,
            "jti": refresh_jti or uuid.uuid4().hex,
            "fam": family,
        },
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
    """A token's claims once its signature checks out (expiry, agent and secret version are checked by the
    caller, every time: rotating a secret defeats this cache). An agent sends the same access token with every
    request: verifying it once instead of per request is ≈ 8 % of the REST ingest's CPU (bench/README.md, issue
    14). Invalid tokens raise and are not cached."""
    return jwt.decode(
        token, key, algorithms=[ALGORITHM], options={"require": ["sub", "exp", "typ"], "verify_exp": False}
    )


async def check_current(agent_id: str, secret_version: int) -> None:
    """AuthError unless the agent is enabled and `secret_version` is its current one (in memory; a newer version
    than this process knows, i.e. a token from a fresh login after a rotation, checks Redis's version first)."""
    versions = await ACTIVE_AGENTS.get()
    if agent_id in versions and secret_version > versions[agent_id]:
        versions = await ACTIVE_AGENTS.get(fresh=True)
    if agent_id not in versions:
        raise AuthError("agent unknown or disabled", "agent_disabled")
    if versions[agent_id] != secret_version:
        raise AuthError("credentials revoked (the agent's secret was rotated)", "credentials_revoked")


async def authenticate_token(token: str) -> AgentIdentity:
    """The identity of a valid access token of an enabled agent; AuthError otherwise."""
    claims = decode(token, "access")
    secret_version = _secret_version(claims)
    await check_current(claims["sub"], secret_version)
    return AgentIdentity(claims["sub"], claims.get("jti", ""), float(claims["exp"]), secret_version)


def _secret_version(claims: dict) -> int:
    version = claims.get("sv")
    if isinstance(version, bool) or not isinstance(version, int):
        raise AuthError("credentials revoked (token from before secret versions)", "credentials_revoked")
    return version


def new_token_family(agent) -> dict:
    """A token pair whose refresh token starts a new family (what a login gives once the secret checked out)."""
    from apps.agents.models import RefreshTokenFamily

    now = datetime.now(UTC)
    RefreshTokenFamily.objects.filter(agent=agent, expires_at__lte=now).delete()  # the agent's dead families
    family = RefreshTokenFamily.objects.create(
        id=uuid.uuid4().hex,
        agent=agent,
        current_jti=uuid.uuid4().hex,
        expires_at=now + timedelta(seconds=settings.AGENT_REFRESH_TOKEN_TTL),
    )
    return issue_tokens(agent.id, agent.secret_version, family.id, family.current_jti)


def refresh(refresh_token: str) -> dict:
    """A new token pair for the current refresh token of a family, which is spent by it; AuthError otherwise.
    A spent token revokes its family: its newest refresh token fails from then on too."""
    claims = decode(refresh_token, "refresh")
    version = _secret_version(claims)
    with transaction.atomic():
        tokens, error = _spend(claims, version)
    if error is not None:
        raise error
    return tokens


def _spend(claims: dict, version: int) -> tuple[dict | None, AuthError | None]:
    """Inside the caller's transaction: the family row is locked, so two refreshes with one token cannot both
    win. Returns the error instead of raising it, so that a revocation commits."""
    from apps.agents.models import RefreshTokenFamily

    family = (
        RefreshTokenFamily.objects.select_for_update(of=("self",))
        .select_related("agent")
        .filter(pk=str(claims.get("fam") or ""), agent_id=claims["sub"])
        .first()
    )
    if family is None or family.revoked_at is not None:
        return None, AuthError("refresh token revoked", "token_revoked")
    if not family.agent.is_active:
        return None, AuthError("agent unknown or disabled", "agent_disabled")
    if family.agent.secret_version != version:
        return None, AuthError("credentials revoked (the agent's secret was rotated)", "credentials_revoked")
    now = datetime.now(UTC)
    if claims.get("jti") != family.current_jti:
        family.revoked_at, family.revoked_reason = now, "reuse"
        family.save(update_fields=["revoked_at", "revoked_reason"])
        logger.warning("agent %s: a spent refresh token was presented; its token family is revoked", claims["sub"])
        return None, AuthError("refresh token already used; its token family is revoked", "token_reused")
    family.current_jti, family.rotated_at = uuid.uuid4().hex, now
    family.save(update_fields=["current_jti", "rotated_at"])
    return issue_tokens(family.agent_id, version, family.id, family.current_jti), None


def bearer(header_value: str | bytes | None) -> str:
    if isinstance(header_value, bytes):
        header_value = header_value.decode("latin-1")
    if not header_value:
        return ""
    scheme, _, token = header_value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def login_limits(agent_id: str, address: str | None) -> list[ratelimit.Limit]:
    window = settings.AGENT_LOGIN_WINDOW
    agent_key = hashlib.sha256(agent_id.encode()).hexdigest()[:32]  # any string a client sends, kept short
    return [
        ratelimit.Limit("agent-login:id", agent_key, settings.AGENT_LOGIN_LIMIT_PER_ID, window),
        ratelimit.Limit("agent-login:addr", address or "unknown", settings.AGENT_LOGIN_LIMIT_PER_ADDRESS, window),
    ]


def refresh_limit(address: str | None) -> ratelimit.Limit:
    return ratelimit.Limit(
        "agent-refresh:addr",
        address or "unknown",
        settings.AGENT_REFRESH_LIMIT_PER_ADDRESS,
        settings.AGENT_LOGIN_WINDOW,
    )


def login_capacity() -> int:
    """Logins a web process works on at once: hashing, or waiting for a hashing slot. More are refused."""
    return settings.AGENT_LOGIN_HASH_CONCURRENCY + settings.AGENT_LOGIN_MAX_WAITING


def login_busy() -> Throttled:
    return Throttled(settings.AGENT_LOGIN_BUSY_RETRY_AFTER, "login service busy", "login_busy")


async def refused_early(path: str, address: str | None) -> Throttled | None:
    """For the ASGI gate in front of Django (apps.agents.asgi): a login or refresh whose address is over its
    limit, told without counting anything. The counting and the decision stay in `login` / the refresh view."""
    limit = login_limits("", address)[1] if path == "login" else refresh_limit(address)
    wait = await ratelimit.retry_after(limit)
    return Throttled(wait) if wait else None


def login(agent_id: str, api_key: str, address: str | None) -> dict:
    """Tokens (a new refresh-token family) for an enabled agent's id + secret. Throttled per id and per client
    address before any hashing; a successful login takes its attempt back."""
    from apps.agents.models import Agent

    limits = login_limits(agent_id, address)
    retry_after = ratelimit.hit(limits)
    if retry_after:
        raise Throttled(retry_after)
    agent = Agent.objects.filter(pk=agent_id).only("id", "secret_hash", "is_active", "secret_version").first()
    if agent is not None and not agent.is_active:
        agent = None
    if not verify_secret(agent, api_key):
        raise AuthError("invalid agent_id or api_key", "invalid_credentials")
    ratelimit.forgive(limits)
    return new_token_family(agent)
