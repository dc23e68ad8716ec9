"""Seed the price table (the seed plan's prices + every preset's models) and the default global daily
budget (settings.COST_GLOBAL_DAILY_LIMIT, 80 % / 100 % alerts, degrade to the cheap route). (The usage
flush's beat entry, once registered here, is declared in celery_app.py.)"""

from datetime import date
from decimal import Decimal

from django.conf import settings
from django.db import migrations


def seed(apps, schema_editor):
    from apps.costs.prices import SEED_PRICES

    ModelPrice = apps.get_model("costs", "ModelPrice")
    Budget = apps.get_model("costs", "Budget")
    for (provider, model), (price_in, price_out) in SEED_PRICES.items():
        ModelPrice.objects.get_or_create(
            provider=provider, model=model, effective_date=date(2024, 1, 1),
            defaults={"input_per_1k": Decimal(price_in), "output_per_1k": Decimal(price_out), "note": "seed"},
        )
    if not Budget.objects.filter(scope="global").exists():
        Budget.objects.create(
            name="全局每日预算", scope="global", target="", period="day",
            limit=Decimal(str(settings.COST_GLOBAL_DAILY_LIMIT)), thresholds=[80, 100], policy="cheap",
        )


class Migration(migrations.Migration):
    dependencies = [
        ("costs", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
