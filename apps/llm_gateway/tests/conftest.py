"""A gateway wired to the loopback server: providers p1 (model m1) and p2 (m2, cheap-m, emb) on one fake
server, routes default = p1/m1 → p2/m2, cheap = p2/cheap-m, embedding = p2/emb; fast retries; a known
price table; no budgets unless a test adds some."""

from decimal import Decimal

import pytest

from apps.costs import services as costs
from apps.costs.models import Budget, ModelPrice
from apps.costs.tests.factories import ModelPriceFactory
from apps.llm_gateway.testing import fake_openai, reset_gateway

KB_ANSWER = "知识库：七天无理由退货。"
PRICES = (
    ("p1", "m1", "0.01", "0.02"),
    ("p2", "m2", "0.02", "0.04"),
    ("p2", "cheap-m", "0", "0"),
    ("p2", "emb", "0.001", "0"),
)


async def kb_answer(messages):
    """A stand-in for the knowledge base's offline answerer."""
    text = messages[-1]["content"] if messages else ""
    return KB_ANSWER if "退货" in text else None


async def broken_answerer(messages):
    raise RuntimeError("knowledge base down")


@pytest.fixture
def gw(settings, transactional_db):
    with fake_openai() as server:
        base = {"kind": "custom", "api_base": server.base_url, "timeout": 2.0}
        settings.LLM_PROVIDERS = {
            "p1": {**base, "api_key": "key-1", "model": "m1"},
            "p2": {**base, "api_key": "key-2", "model": "m2"},
        }
        settings.LLM_ROUTES = {
            "default": [{"provider": "p1", "model": "m1"}, {"provider": "p2", "model": "m2"}],
            "cheap": [{"provider": "p2", "model": "cheap-m"}],
            "embedding": [{"provider": "p2", "model": "emb"}],
        }
        settings.LLM_RETRIES = 2
        settings.LLM_BACKOFF_BASE = 0.01
        settings.LLM_BACKOFF_MAX = 0.05
        settings.LLM_CIRCUIT_FAILURES = 3
        settings.LLM_CIRCUIT_COOLDOWN = 0.5
        settings.LLM_CIRCUIT_PROBE_TIMEOUT = 2.0
        settings.LLM_OFFLINE_ANSWERER = "apps.llm_gateway.tests.conftest.kb_answer"
        costs.delete_budgets(Budget.objects.all())  # the seeded global budget, when the migration's rows are there
        costs.delete_prices(ModelPrice.objects.all())
        for provider, model, price_in, price_out in PRICES:
            ModelPriceFactory(
                provider=provider, model=model, input_per_1k=Decimal(price_in), output_per_1k=Decimal(price_out)
            )
        reset_gateway()
        yield server
        reset_gateway()


def user_msg(text: str = "你好") -> list[dict]:
    return [{"role": "user", "content": text}]
