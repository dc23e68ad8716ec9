import io

import pytest

from apps.rules import demo, services
from apps.rules.models import Rule


@pytest.fixture(autouse=True)
def _fresh_rules():
    services.RULES.forget()
    yield
    services.RULES.forget()


@pytest.fixture
def default_rules(transactional_db):
    """The rules and limits seed_demo installs (seeded twice: it is idempotent)."""
    demo.seed(io.StringIO())
    demo.seed(io.StringIO())
    assert Rule.objects.count() == len(demo.DEFAULT_RULES)
