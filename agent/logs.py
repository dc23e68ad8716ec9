"""Logging: a rotating file plus stderr, and a filter that keeps secrets out of every line.

The filter masks the agent secret and any token it was told about, anything shaped like a JWT,
and ``api_key`` / ``secret`` / ``token`` / ``Authorization`` values — so even a library's debug
line cannot leak them.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from pathlib import Path

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_KEYED = re.compile(
    r"(?i)((?:api_key|secret|password|access_token|refresh_token|token|authorization)[\"']?\s*[:=]\s*[\"']?"
    r"(?:bearer\s+)?)([^\s\"',}&]+)"
)


class SecretFilter(logging.Filter):
    def __init__(self):
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, *values: str) -> None:
        self._secrets.update(v for v in values if v and len(v) >= 6)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        text = _JWT.sub("***jwt***", text)
        return _KEYED.sub(lambda m: m.group(1) + "***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


SECRETS = SecretFilter()


def setup(file: str = "", level: str = "INFO", max_bytes: int = 5_000_000, backups: int = 5) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        if getattr(handler, "_wxcs_agent", False):
            root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        )
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(SECRETS)
        handler._wxcs_agent = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for noisy in ("websockets", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
