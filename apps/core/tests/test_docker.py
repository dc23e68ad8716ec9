import shutil
import subprocess

import pytest
import yaml

from apps.core.testing import BASE_DIR

COMPOSE = BASE_DIR / "docker" / "docker-compose.yml"


def test_compose_file_has_the_production_services():
    spec = yaml.safe_load(COMPOSE.read_text())
    assert {"postgres", "redis", "web", "worker", "beat"} <= set(spec["services"])
    assert spec["services"]["postgres"]["image"] == "postgres:15"
    assert "--appendonly" in spec["services"]["redis"]["command"]
    assert "apps.core.webserver" in spec["services"]["web"]["command"]  # Daphne with the project's WS limits


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose not installed")
def test_docker_compose_config_passes():
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
