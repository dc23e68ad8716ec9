"""Property-based testing of the REST API against a real Daphne (and Celery worker, so `?wait=` gets its decision):
schemathesis generates requests from the served OpenAPI schema — valid ones and invalid ones — for every
operation, as an agent (bearer token) and as staff (session cookie), and checks each answer: never a 5xx, and
status code, content type, headers and body as the schema declares them (error bodies included: `{detail, code}`).

Reproducible: Hypothesis runs derandomized (a fixed seed per test), without its example database.
"""

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial

import pytest
import requests
import schemathesis
from django.contrib.auth import get_user_model
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.customers.tests.factories import CustomerFactory
from apps.messages.tests.factories import ReplyFactory
from apps.messages.tests.helpers import make_agent
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_MODE = 75  # per operation and generation mode, with credentials
FIXED_ID_EXAMPLES = 10  # per seeded reply, with its real id
ANONYMOUS_EXAMPLES = 15  # per operation, valid requests without credentials: the 401/403 answers
MIN_CASES = 1_000
STAFF_SECURITY = "cookieAuth"


@pytest.fixture
def live_env(live_env):
    """Login throttling has its own tests (apps/agents/tests/test_lifecycle.py, the login flood): here every
    generated login and refresh must reach its validation, not the per-address 429."""
    limits = ("AGENT_LOGIN_LIMIT_PER_ID", "AGENT_LOGIN_LIMIT_PER_ADDRESS", "AGENT_REFRESH_LIMIT_PER_ADDRESS")
    return {**live_env, **dict.fromkeys(limits, "1000000")}


@dataclass
class Tally:
    cases: int = 0
    server_errors: int = 0
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # per operation
    failures: dict[tuple, list] = field(default_factory=dict)  # (operation, titles) → [count, first report]

    def report(self) -> str:
        return "\n".join(
            f"{count} × {label}: {', '.join(titles)}\n{first}"
            for (label, titles), (count, first) in self.failures.items()
        )


def run_operation(operation, mode, examples: int, who: str, *, http: requests.Session, base_url: str, tally, **fixed):
    """`examples` generated requests to `operation`; `fixed`: values not to generate (headers, cookies, ids)."""
    label = f"{operation.label} [{who}, {mode.value}]"

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def exercise(case):
        response = case.call(base_url=base_url, session=http, timeout=60)
        tally.cases += 1
        tally.statuses[label][response.status_code] += 1
        tally.server_errors += response.status_code >= 500
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:  # recorded, and the run goes on
            key = (label, tuple(sorted({failure.title for failure in group.exceptions})))
            tally.failures.setdefault(key, [0, str(group)])[0] += 1

    try:
        exercise()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body): no negative cases
        assert mode == GenerationMode.NEGATIVE, label


def security_schemes(operation) -> set[str]:
    return {name for requirement in operation.definition.raw.get("security", []) for name in requirement}


def operations(schema, staff: bool):
    """The staff pass takes the operations a session may call, the agent pass those a token (or nothing) may."""
    for result in schema.get_all_operations():
        operation = result.ok()
        schemes = security_schemes(operation)
        if (STAFF_SECURITY in schemes) if staff else (schemes - {STAFF_SECURITY} or not schemes):
            yield operation


def credentials(base_url: str) -> tuple[dict, dict, list]:
    """(agent credentials, staff credentials, the agent's replies): fixed values of the strategies, so that
    generation never replaces them with made-up ones."""
    agent, _ = make_agent()
    replies = ReplyFactory.create_batch(3, message__conversation__agent=agent, status="sent")
    CustomerFactory.create_batch(3)
    CustomerFactory(erp_contact_id=42, phone="0771-5551234")
    browser = Client()
    browser.force_login(get_user_model().objects.create_superuser("fuzz-admin", password="pw"))
    login = requests.post(
        f"{base_url}/api/v1/auth/login", json={"agent_id": agent.id, "api_key": agent.secret}, timeout=30
    )
    assert login.status_code == 200, login.text
    as_agent = {"headers": {"Authorization": f"Bearer {login.json()['access_token']}"}}
    return as_agent, {"cookies": {"sessionid": browser.cookies["sessionid"].value}}, replies


def test_generated_requests_never_break_the_api_and_match_its_schema(live_server_stack):
    base_url, _ = live_server_stack
    as_agent, as_staff, replies = credentials(base_url)
    schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/?format=json")
    tally, started = Tally(), time.monotonic()
    run = partial(run_operation, http=requests.Session(), base_url=base_url, tally=tally)
    for fixed, staff_pass, who in ((as_agent, False, "agent"), (as_staff, True, "staff")):
        for operation in operations(schema, staff_pass):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run(operation, mode, EXAMPLES_PER_MODE, who, **fixed)
            if "{reply_id}" in operation.path:  # generated ids rarely exist: also the agent's real replies
                for reply in replies:
                    real_id = {"path_parameters": {"reply_id": reply.pk}}
                    run(operation, GenerationMode.POSITIVE, FIXED_ID_EXAMPLES, "agent, real id", **real_id, **fixed)
    secured = []
    for result in schema.get_all_operations():
        run(result.ok(), GenerationMode.POSITIVE, ANONYMOUS_EXAMPLES, "anonymous")
        if security_schemes(result.ok()):
            secured.append(f"{result.ok().label} [anonymous, positive]")
    elapsed = time.monotonic() - started

    print(f"\nschemathesis: {tally.cases} cases in {elapsed:.0f} s, {tally.server_errors} server errors")
    for label, statuses in sorted(tally.statuses.items()):
        print(f"  {sum(statuses.values()):4d}  {label}  {dict(sorted(statuses.items()))}")
    assert tally.cases >= MIN_CASES
    assert tally.server_errors == 0, tally.report()
    assert not tally.failures, tally.report()
    served_anonymously = {label: tally.statuses[label] for label in secured if _any_success(tally.statuses[label])}
    assert not served_anonymously


def _any_success(statuses: Counter) -> bool:
    return any(200 <= status < 300 for status in statuses)
