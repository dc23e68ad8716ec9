"""Core's part of seed_demo: the staff role groups (apps.core.roles) and the demo supervisor account."""

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model

from apps.core import roles


def credentials_file():
    return settings.VAR_DIR / "demo_supervisor.txt"


def seed(stdout) -> None:
    stdout.write("staff groups: " + ", ".join(roles.seed_groups()))
    User = get_user_model()
    username = settings.DEMO_SUPERVISOR_USERNAME
    if User.objects.filter(username=username).exists():
        stdout.write(f"demo supervisor '{username}' exists (password in {credentials_file()})")
        return
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    fd = os.open(credentials_file(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"username: {username}\npassword: {password}\n")
    stdout.write(f"demo supervisor created — username: {username}  password: {password}")
