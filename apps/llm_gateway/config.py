"""Which providers and routes the gateway uses, resolved from (highest first):
`settings.LLM_ROUTES` / `settings.LLM_PROVIDERS` (the environment, or a test override), the admin's
Provider / Route rows, and the presets.

Every process keeps the result in memory (`await get()`, a `VersionedCache`): the services that write
providers or routes bump it, this process reloads on its next read, the others once they see the new
version (they check the Redis version key at most every `settings.LLM_CONFIG_TTL` seconds).
"""

from dataclasses import dataclass, field

from django.conf import settings

from apps.core.cache import VersionedCache
from apps.llm_gateway.presets import PRESETS

# Order in which configured providers fill the built-in routes: an explicit local/company server
# first, then the domestic providers, then the others.
ROUTE_ORDER = ("custom", "qwen", "deepseek", "glm", "moonshot", "ernie", "openai", "claude", "gemini")
BUILTIN_ROUTES = ("default", "cheap", "embedding")


@dataclass(frozen=True)
class ProviderConf:
    name: str
    kind: str
    api_base: str
    api_key: str
    default_model: str
    cheap_model: str = ""
    embedding_model: str = ""
    timeout: float | None = None


@dataclass(frozen=True)
class Entry:
    provider: ProviderConf
    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.model}"


@dataclass
class GatewayConfig:
    providers: dict[str, ProviderConf] = field(default_factory=dict)
    routes: dict[str, list[Entry]] = field(default_factory=dict)
    source: str = ""


def _provider(name: str, values: dict, db=None) -> ProviderConf | None:
    kind = getattr(db, "kind", "") or values.get("kind") or (name if name in PRESETS else "custom")
    preset = PRESETS.get(kind, PRESETS["custom"])

    def pick(attr: str, env_key: str, default=""):
        value = getattr(db, attr, None) if db is not None else None
        return value if value not in (None, "") else values.get(env_key) or default

    api_base = pick("api_base", "api_base", preset.api_base)
    api_key = pick("api_key", "api_key")
    model = pick("default_model", "model", preset.default_model)
    timeout = pick("timeout", "timeout", None)
    if not api_base or not model or (not api_key and kind != "custom"):
        return None  # not usable: no endpoint, no model, or no key for a hosted provider
    return ProviderConf(
        name=name,
        kind=kind,
        api_base=api_base,
        api_key=api_key or "none",
        default_model=model,
        cheap_model=values.get("cheap_model") or (preset.cheap_model if model == preset.default_model else model),
        embedding_model=values.get("embedding_model") or preset.embedding_model,
        timeout=float(timeout) if timeout not in (None, "") else None,
    )


def _db_rows():
    from apps.llm_gateway.models import Provider, Route

    providers = {p.name: p for p in Provider.objects.filter(enabled=True)}
    routes = {
        r.name: [
            (e.provider.name, e.model, e.temperature, e.max_tokens, e.timeout)
            for e in r.entries.all()
            if e.provider.enabled
        ]
        for r in Route.objects.prefetch_related("entries__provider")
    }
    return providers, routes


def _load(version: str) -> GatewayConfig:
    """Build the configuration (sync: reads the database)."""
    env_providers: dict = dict(getattr(settings, "LLM_PROVIDERS", {}) or {})
    db_providers, db_routes = _db_rows()
    providers: dict[str, ProviderConf] = {}
    for name in {*env_providers, *db_providers}:
        conf = _provider(name, env_providers.get(name, {}), db_providers.get(name))
        if conf is not None:
            providers[name] = conf

    routes: dict[str, list[Entry]] = {}
    for name, rows in db_routes.items():
        routes[name] = [
            Entry(providers[p], m or providers[p].default_model, t, mt, to)
            for p, m, t, mt, to in rows
            if p in providers
        ]
    for name, rows in (getattr(settings, "LLM_ROUTES", {}) or {}).items():
        routes[name] = [
            Entry(
                providers[r["provider"]],
                r.get("model") or providers[r["provider"]].default_model,
                r.get("temperature"),
                r.get("max_tokens"),
                r.get("timeout"),
            )
            for r in rows
            if r["provider"] in providers
        ]
    ordered = sorted(
        providers.values(), key=lambda p: (ROUTE_ORDER.index(p.kind) if p.kind in ROUTE_ORDER else 99, p.name)
    )
    if not routes.get("default"):
        routes["default"] = [Entry(p, p.default_model) for p in ordered]
    if not routes.get("cheap"):
        routes["cheap"] = [Entry(p, p.cheap_model or p.default_model) for p in ordered]
    if not routes.get("embedding"):
        routes["embedding"] = [Entry(p, p.embedding_model) for p in ordered if p.embedding_model]
    return GatewayConfig(providers=providers, routes=routes, source="db+env")


CONFIG: VersionedCache[GatewayConfig] = VersionedCache(
    "llm_gateway", _load, check_seconds=lambda: settings.LLM_CONFIG_TTL
)


async def get() -> GatewayConfig:
    return await CONFIG.get()
