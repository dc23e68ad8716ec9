import pytest

from apps.rules import services


@pytest.fixture(autouse=True)
def _fresh_rules():
    services.reset()
    yield
    services.reset()
