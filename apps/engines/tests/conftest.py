import pytest

from apps.engines import manager, memory
from apps.llm_gateway.testing import fake_openai, use_fake_provider

from .factories import build_world


@pytest.fixture(autouse=True)
def _fresh_engine_state():
    """Each test starts with no switch state, health results or memory in this process."""

    def forget():
        manager.SWITCH.forget()
        manager._health.clear()
        memory.memory_cache.reset_local()

    forget()
    yield
    forget()


@pytest.fixture
def no_live_erp(monkeypatch):
    """contract_detail adds live product lines from the ERP; engine tests use the synced rows only."""
    from apps.erp import client as erp_client

    def unreachable(cls):
        raise erp_client.ErpError("ERP 未配置（测试）")

    monkeypatch.setattr(erp_client.ErpClient, "from_settings", classmethod(unreachable))


@pytest.fixture
def world(transactional_db, no_live_erp):
    """A bound customer's private chat (see factories.World)."""
    return build_world()


@pytest.fixture
def server(settings, tmp_path):
    """The loopback OpenAI-compatible server behind the gateway; mem0 keeps its store under tmp_path."""
    with fake_openai() as fake:
        use_fake_provider(fake, settings)
        settings.MEM0_DIR = tmp_path / "mem0"
        settings.MEM0_LLM_MODEL = "fake-mem0"  # mem0's fact extraction gets its own scripted answers
        yield fake
