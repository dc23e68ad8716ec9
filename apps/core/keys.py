"""Key files for the embedded default: created once, 0600, never logged.

Kept free of Django imports because settings.py uses it before Django is configured.
"""

import base64
import os
import secrets
from pathlib import Path


def load_or_create_key_file(path: Path, nbytes: int = 32) -> str:
    """Return the urlsafe-base64 key stored at `path`, creating it (mode 0600) on first use."""
    path = Path(path)
    if path.exists():
        return path.read_text().strip()
    key = base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two processes starting at once must not both write a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def mask_secret(value: str) -> str:
    """`sk-1234567890abcd23` → `sk-1…cd23`; short values are fully hidden."""
    if not value:
        return ""
    if len(value) <= 8:
        return "…"
    return f"{value[:4]}…{value[-4:]}"
