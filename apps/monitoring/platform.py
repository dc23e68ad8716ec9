"""run_platform calls processes() once, before any process starts: the moment to empty the metrics directory.

Monitoring adds no process of its own (the dashboard producer runs inside the web process).
"""

import shutil
from pathlib import Path

from django.conf import settings


def reset_multiprocess_dir() -> None:
    """Start every platform run with no samples from processes of an earlier run."""
    directory = settings.PROMETHEUS_MULTIPROC_DIR
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True, exist_ok=True)


def processes() -> dict[str, str]:
    reset_multiprocess_dir()
    return {}
