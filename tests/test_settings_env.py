"""wxcs/settings.py is the one place that reads the environment: every knob it reads is documented in
.env.example, values arrive typed, and a malformed value stops the process at start."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, django; django.setup(); from django.conf import settings; "
    "print(json.dumps({name: getattr(settings, name) for name in %r}))"
)


def _settings_in_child(names: list[str], **overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WXCS_TESTING": "1", "DJANGO_SETTINGS_MODULE": "wxcs.settings", **overrides}
    return subprocess.run(
        [sys.executable, "-c", PROBE % names], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_every_knob_read_in_settings_is_documented_in_env_example():
    read = set(re.findall(r'env\.\w+\(\s*"([A-Z0-9_]+)"', (ROOT / "wxcs/settings.py").read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read, "no env.* reads found in wxcs/settings.py"
    assert sorted(read - documented) == []


def test_app_knobs_come_from_the_environment_typed():
    overrides = {
        "AGENT_ACCESS_TOKEN_TTL": "120",
        "GROUP_REPLY_REQUIRES_AT": "false",
        "PIPELINE_CONCURRENCY": "32",
        "KNOWLEDGE_HYBRID_ALPHA": "0.7",
        "RULES_ADMIN_NICKNAMES": "店长，组长, 老板",
    }
    result = _settings_in_child(list(overrides), **overrides)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "AGENT_ACCESS_TOKEN_TTL": 120,
        "GROUP_REPLY_REQUIRES_AT": False,
        "PIPELINE_CONCURRENCY": 32,
        "KNOWLEDGE_HYBRID_ALPHA": 0.7,
        "RULES_ADMIN_NICKNAMES": ["店长", "组长", "老板"],
    }


def test_a_malformed_knob_stops_the_process_at_start():
    result = _settings_in_child(["INGEST_RATE_LIMIT"], INGEST_RATE_LIMIT="lots")
    assert result.returncode != 0
    assert "ValueError" in result.stderr and "lots" in result.stderr
