"""The production environment the README documents: `check --deploy` is clean with it, and under it every
response — Django's and the ASGI ingest door's (apps.messages.asgi, which bypasses Django's middleware) — gets
the same Host check, HTTPS redirect and security headers."""

import base64
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import requires_services

ROOT = Path(__file__).resolve().parent.parent
SECURITY_HEADERS = (
    "strict-transport-security",
    "x-content-type-options",
    "referrer-policy",
    "cross-origin-opener-policy",
    "x-frame-options",
    "content-security-policy",
)


def documented_production_env() -> dict[str, str]:
    """The README's "Production environment" block, each `<…>` placeholder filled as an operator would."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"### Production environment\n.*?```env\n(.*?)```", readme, re.S)
    assert block, "README.md has no production environment block"
    env = dict(line.split("=", 1) for line in block.group(1).splitlines() if line.strip())
    fill = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    return {
        name: (fill.get(name) or re.sub(r"<[^>]*>", secrets.token_hex(8), value)) if "<" in value else value
        for name, value in env.items()
    }


def test_check_deploy_is_clean_with_the_documented_production_environment(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "WXCS_TESTING": "0",
        "WXCS_VAR_DIR": str(tmp_path / "var"),
        **documented_production_env(),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


@pytest.mark.e2e
@requires_services
@pytest.mark.django_db(transaction=True)
def test_ingest_door_answers_with_the_same_host_check_and_headers_as_django(tmp_path):
    from apps.core.testing import child_environment, running, start_daphne

    production = documented_production_env()
    keep = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEY")
    host = production["ALLOWED_HOSTS"].split(",")[0]
    overrides = {name: value for name, value in production.items() if name not in keep}
    env = child_environment(**overrides, AGENT_LOGIN_LIMIT_PER_ADDRESS="1")
    daphne, base_url = start_daphne(env, tmp_path)
    with running(daphne), httpx.Client(base_url=base_url, timeout=10) as http:
        via_tls = {"Host": host, "X-Forwarded-Proto": "https"}
        ingest = http.post("/api/v1/messages", json={"message": {}}, headers=via_tls)
        django = http.get("/api/v1/stats", headers=via_tls)
        assert ingest.status_code == django.status_code == 401
        headers = {name: ingest.headers.get(name) for name in SECURITY_HEADERS}
        assert headers == {name: django.headers.get(name) for name in SECURITY_HEADERS}
        assert None not in headers.values(), headers
        assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
        assert "default-src 'self'" in headers["content-security-policy"]

        # The login gate answers a flood's 429s before Django (apps.agents.asgi), with the same headers.
        wrong = {"agent_id": "agt_nobody", "api_key": "wrong"}
        logins = [http.post("/api/v1/auth/login", json=wrong, headers=via_tls) for _ in range(3)]
        assert [login.status_code for login in logins] == [401, 429, 429]
        assert {name: logins[-1].headers.get(name) for name in SECURITY_HEADERS} == headers
        assert http.post("/api/v1/auth/login", json=wrong, headers={**via_tls, "Host": "x.example"}).status_code == 400

        # A Host outside ALLOWED_HOSTS: 400 on both doors.
        bad_host = {**via_tls, "Host": "attacker.example"}
        refused = http.post("/api/v1/messages", json={"message": {}}, headers=bad_host)
        assert refused.status_code == http.get("/api/v1/stats", headers=bad_host).status_code == 400
        assert refused.json() == {"detail": "Invalid HTTP_HOST header", "code": "disallowed_host"}

        # Plain HTTP: sent to https on both doors (no HSTS on plain HTTP); health checks stay reachable.
        plain = {"Host": host}
        moved = http.post("/api/v1/messages", json={"message": {}}, headers=plain)
        django_moved = http.get("/api/v1/stats", headers=plain)
        assert moved.status_code == django_moved.status_code == 301
        assert moved.headers["location"] == f"https://{host}/api/v1/messages"
        assert django_moved.headers["location"] == f"https://{host}/api/v1/stats"
        assert "strict-transport-security" not in moved.headers
        assert http.get("/healthz", headers=plain).status_code == 200
