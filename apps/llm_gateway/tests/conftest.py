"""A gateway wired to the loopback server: providers p1 (model m1) and p2 (m2, cheap-m, emb) on one fake
server, routes default = p1/m1 → p2/m2, cheap = p2/cheap-m, embedding = p2/emb; fast retries; a known
price table; no budgets unless a test adds some."""

from decimal import Decimal

import pytest

from apps.llm_gateway.testing import fake_openai

KB_ANSWER = "知识库：七天无理由退货。"


def kb_answer(messages):
    """A stand-in offline answerer (sync, like the knowledge app's)."""
    text = messages[-1]["content"] if messages else ""
    return KB_ANSWER if "退货" in text else None


@pytest.fixture
def gw(settings, transactional_db):
    from apps.costs.models import Budget, ModelPrice
    from apps.llm_gateway.services import reset_gateway

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
        settings.LLM_CONFIG_TTL = 60
        settings.LLM_OFFLINE_ANSWERER = "apps.llm_gateway.tests.conftest.kb_answer"
        Budget.objects.all().delete()
        ModelPrice.objects.all().delete()
        for provider, model, price_in, price_out in (
            ("p1", "m1", "0.01", "0.02"),
            ("p2", "m2", "0.02", "0.04"),
            ("p2", "cheap-m", "0", "0"),
            ("p2", "emb", "0.001", "0"),
        ):
            ModelPrice.objects.create(
                provider=provider,
                model=model,
                effective_date="2024-01-01",
                input_per_1k=Decimal(price_in),
                output_per_1k=Decimal(price_out),
            )
        reset_gateway()
        yield server
        reset_gateway()


def user_msg(text: str = "你好") -> list[dict]:
    return [{"role": "user", "content": text}]
