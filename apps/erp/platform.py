"""`make run` adds the ERP simulator as a process when no real ERP is configured."""

import shlex
import sys

from django.conf import settings


def processes() -> dict[str, str]:
    if settings.ERP_BASE_URL:
        return {}
    python = shlex.quote(sys.executable)
    return {"erp-simulator": f"{python} -m apps.erp.simulator --port {settings.ERP_SIMULATOR_PORT}"}
