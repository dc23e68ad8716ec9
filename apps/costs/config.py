"""Prices and budgets as every process keeps them in memory (one `VersionedCache`).

The gateway reads them on every call (`await get_config()`: in memory; the Redis version key is checked at
most every `settings.LLM_CONFIG_TTL` seconds); the services that write prices or budgets bump the cache.
"""

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.core.cache import VersionedCache


@dataclass(frozen=True)
class BudgetConf:
    id: int
    name: str
    scope: str
    target: str
    period: str
    limit: float
    thresholds: tuple[int, ...]
    policy: str

    def applies(self, provider: str, model: str, agent: str) -> bool:
        if self.scope == "global":
            return True
        if self.scope == "provider":
            return self.target == provider
        if self.scope == "model":
            return self.target in (model, f"{provider}/{model}")
        if self.scope == "agent":
            return bool(agent) and self.target == agent
        return False

    @property
    def enforcing(self) -> bool:
        return self.policy != "alert"


@dataclass
class CostConfig:
    prices: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    by_model: dict[str, tuple[float, float]] = field(default_factory=dict)
    budgets: list[BudgetConf] = field(default_factory=list)
    expires_at: float = 0.0  # epoch seconds of the next local midnight: prices may take effect then


def enabled_budgets() -> list[BudgetConf]:
    """The enabled budgets, straight from the database (sync)."""
    from apps.costs.models import Budget

    return [
        BudgetConf(
            b.id,
            b.name,
            b.scope,
            b.target,
            b.period,
            float(b.limit),
            tuple(sorted(int(t) for t in (b.thresholds or []))),
            b.policy,
        )
        for b in Budget.objects.filter(enabled=True)
    ]


def _load(version: str) -> CostConfig:
    from apps.costs.models import ModelPrice

    today = timezone.localdate()
    midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=timezone.get_current_timezone())
    config = CostConfig(budgets=enabled_budgets(), expires_at=midnight.timestamp())
    for p in ModelPrice.objects.filter(effective_date__lte=today).order_by("effective_date"):
        price = (float(p.input_per_1k), float(p.output_per_1k))
        config.prices[(p.provider, p.model)] = price  # later effective dates overwrite earlier ones
        config.by_model[p.model] = price
    return config


CONFIG: VersionedCache[CostConfig] = VersionedCache("costs", _load, check_seconds=lambda: settings.LLM_CONFIG_TTL)


async def get_config() -> CostConfig:
    config = await CONFIG.get()
    if time.time() >= config.expires_at:  # a new day: prices effective from today apply
        CONFIG.forget()
        config = await CONFIG.get()
    return config


def price_for(config: CostConfig, provider: str, model: str, kind: str = "") -> tuple[float, float, bool]:
    """(input, output) CNY per 1k tokens and whether the model is in the price table."""
    price = config.prices.get((provider, model)) or config.prices.get((kind, model)) or config.by_model.get(model)
    if price is None:
        return settings.COST_DEFAULT_INPUT_PER_1K, settings.COST_DEFAULT_OUTPUT_PER_1K, False
    return price[0], price[1], True


def cost_of(price_in: float, price_out: float, input_tokens: int, output_tokens: int) -> float:
    return round(price_in * input_tokens / 1000 + price_out * output_tokens / 1000, 8)
