"""Running manage.py as the embedded default would (a child process with its own var/); staff accounts
holding named permissions."""

import os
import subprocess
import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from apps.core.testing import BASE_DIR

STAFF_PASSWORD = "Pa55-word-staff"


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


def permission(name: str) -> Permission:
    """A Permission by its "app_label.codename" name."""
    app_label, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def staff_user(username: str, *perms: str, password: str = STAFF_PASSWORD):
    """An active staff account holding exactly the named permissions ("app_label.codename")."""
    user = get_user_model().objects.create_user(username=username, password=password, is_staff=True)
    user.user_permissions.add(*(permission(name) for name in perms))
    return user
