"""Running manage.py as the embedded default would (a child process with its own var/)."""

import os
import subprocess
import sys

from apps.core.testing import BASE_DIR


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )


def embedded_env(tmp_path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEY", "REQUIRE_SERVICES")
    }
    env.update(WXCS_TESTING="0", WXCS_VAR_DIR=str(tmp_path / "var"))
    return env
