from apps.llm_gateway.tests.conftest import gw  # noqa: F401 - the loopback-wired gateway fixture
