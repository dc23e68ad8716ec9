"""Costs' part of seed_demo: make sure the price table and the global budget exist (the data migration
seeds them; this re-adds any preset model added to the seed prices since)."""

from datetime import date
from decimal import Decimal

from django.conf import settings

from apps.costs import services
from apps.costs.models import Budget, ModelPrice
from apps.costs.prices import SEED_PRICES


def seed(stdout) -> None:
    added = 0
    for (provider, model), (price_in, price_out) in SEED_PRICES.items():
        if not ModelPrice.objects.filter(provider=provider, model=model).exists():
            services.save_price(
                ModelPrice(
                    provider=provider,
                    model=model,
                    effective_date=date(2024, 1, 1),
                    input_per_1k=Decimal(price_in),
                    output_per_1k=Decimal(price_out),
                    note="seed",
                )
            )
            added += 1
    if not Budget.objects.filter(scope="global").exists():
        services.save_budget(
            Budget(
                name="全局每日预算",
                scope="global",
                period="day",
                thresholds=[80, 100],
                policy="cheap",
                limit=Decimal(str(settings.COST_GLOBAL_DAILY_LIMIT)),
            )
        )
        added += 1
    stdout.write(f"costs: {ModelPrice.objects.count()} prices, {Budget.objects.count()} budgets ({added} added)")
