"""The agent's YAML config, validated at start with errors that name the key and say what is wrong.

```yaml
server:
  url: http://127.0.0.1:8000          # the wxcs server; WebSocket at <url>/ws/agent/ unless ws_url is set
  agent_id: shop-01
  secret_env: WXCS_AGENT_SECRET       # or secret: ..., or credentials_file: var/demo_agent.json
  transport: auto                     # auto (WebSocket, REST when it fails) | ws | rest
driver:
  name: wxauto                        # wxauto (WeChat 3.9) | wxauto4 (WeChat 4.x) | simulator
  watch_chats: [张三, 渝A车友售后群]
  mention_names: []                   # names we answer to in groups (default: our WeChat nickname)
  group_requires_mention: true
  options: {}                         # passed to the driver (simulator: inbox_path, outbox_path, script)
pacing: {min_gap_s: 3, typing_s_per_char: 0.12, max_typing_s: 8, jitter_s: 1.5,
         per_minute_cap: 12, daily_cap: 800, quiet_hours: "23:00-07:00"}
queue: {capacity: 1000, fsync: false}
state_dir: var/agent
heartbeat_s: 30
takeover: {bot_echo_window_s: 300, pause_s: 1800}
reconnect: {initial_s: 1, max_s: 60}
log: {file: var/agent/agent.log, level: INFO, max_bytes: 5000000, backups: 5}
```
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from agent.pacing import PacingConfig, parse_quiet_hours


class ConfigError(ValueError):
    """The config is invalid; the message lists every problem, one per line."""


@dataclass
class ServerConfig:
    url: str = "http://127.0.0.1:8000"
    ws_url: str = ""
    agent_id: str = ""
    secret: str = field(default="", repr=False)
    secret_env: str = ""
    credentials_file: str = ""
    transport: str = "auto"
    verify_tls: bool = True
    timeout_s: float = 10.0
    batch_size: int = 50


@dataclass
class DriverConfig:
    name: str = "wxauto"
    watch_chats: list = field(default_factory=list)
    mention_names: list = field(default_factory=list)
    group_requires_mention: bool = True
    options: dict = field(default_factory=dict)


@dataclass
class QueueConfig:
    capacity: int = 1000
    fsync: bool = False


@dataclass
class TakeoverConfig:
    bot_echo_window_s: float = 300.0
    pause_s: float = 1800.0


@dataclass
class ReconnectConfig:
    initial_s: float = 1.0
    max_s: float = 60.0


@dataclass
class LogConfig:
    file: str = ""
    level: str = "INFO"
    max_bytes: int = 5_000_000
    backups: int = 5


@dataclass
class AgentConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    driver: DriverConfig = field(default_factory=DriverConfig)
    pacing: PacingConfig = field(default_factory=PacingConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    takeover: TakeoverConfig = field(default_factory=TakeoverConfig)
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    log: LogConfig = field(default_factory=LogConfig)
    state_dir: str = "var/agent"
    heartbeat_s: float = 30.0
    poll_interval_s: float = 0.2

    def redacted(self) -> dict[str, Any]:
        """The config as a dict with the secret masked — safe to log."""
        from dataclasses import asdict

        data = asdict(self)
        if data["server"]["secret"]:
            data["server"]["secret"] = "***"  # noqa: S105 - the mask, not a password
        return data


SECTIONS = {
    "server": ServerConfig,
    "driver": DriverConfig,
    "pacing": PacingConfig,
    "queue": QueueConfig,
    "takeover": TakeoverConfig,
    "reconnect": ReconnectConfig,
    "log": LogConfig,
}
SCALARS = {"state_dir": str, "heartbeat_s": float, "poll_interval_s": float}


def _coerce(value: Any, kind: type, where: str, errors: list[str]) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        errors.append(f"{where}: expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        errors.append(f"{where}: expected a whole number, got {value!r}")
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        errors.append(f"{where}: expected a number, got {value!r}")
    elif kind is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        errors.append(f"{where}: expected text, got {value!r}")
    elif kind is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        errors.append(f"{where}: expected a list of names, got {value!r}")
    elif kind is dict:
        if isinstance(value, dict):
            return value
        errors.append(f"{where}: expected a mapping, got {value!r}")
    else:
        return value
    return None


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict, "str | None": str}


def _section(cls, raw: Any, name: str, errors: list[str]):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        errors.append(f"{name}: expected a mapping, got {raw!r}")
        return cls()
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            errors.append(f"{name}.{key}: unknown setting (known: {', '.join(sorted(known))})")
            continue
        kind = _TYPES.get(str(known[key].type), str)
        coerced = _coerce(value, kind, f"{name}.{key}", errors)
        if coerced is not None:
            values[key] = coerced
    return cls(**values)


def parse(data: dict | None, *, base_dir: Path | None = None) -> AgentConfig:
    """Validate a loaded YAML mapping. Raises ConfigError listing every problem."""
    errors: list[str] = []
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping")
    unknown = set(data) - set(SECTIONS) - set(SCALARS)
    for key in sorted(unknown):
        errors.append(f"{key}: unknown section (known: {', '.join(sorted([*SECTIONS, *SCALARS]))})")
    parts = {name: _section(cls, data.get(name), name, errors) for name, cls in SECTIONS.items()}
    scalars = {}
    for key, kind in SCALARS.items():
        if key in data:
            value = _coerce(data[key], kind, key, errors)
            if value is not None:
                scalars[key] = value
    config = AgentConfig(**parts, **scalars)
    _check(config, errors, base_dir)
    if errors:
        raise ConfigError("invalid agent config:\n  " + "\n  ".join(errors))
    return config


def _check(c: AgentConfig, errors: list[str], base_dir: Path | None) -> None:
    s = c.server
    if not s.url.startswith(("http://", "https://")):
        errors.append(f"server.url: must start with http:// or https://, got {s.url!r}")
    if s.ws_url and not s.ws_url.startswith(("ws://", "wss://")):
        errors.append(f"server.ws_url: must start with ws:// or wss://, got {s.ws_url!r}")
    if s.transport not in ("auto", "ws", "rest"):
        errors.append(f"server.transport: one of auto, ws, rest — got {s.transport!r}")
    if s.credentials_file:
        path = Path(s.credentials_file)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            creds = json.loads(path.read_text(encoding="utf-8"))
            s.agent_id = s.agent_id or str(creds.get("agent_id") or creds.get("id") or "")
            s.secret = s.secret or str(creds.get("api_key") or creds.get("secret") or creds.get("agent_secret") or "")
            if s.url == ServerConfig.url:  # the file names the server unless the config does
                s.url = str(creds.get("url") or creds.get("server_url") or s.url)
                s.ws_url = s.ws_url or str(creds.get("ws_url") or "")
        except (OSError, ValueError, AttributeError) as exc:
            errors.append(f"server.credentials_file: cannot read {path}: {exc}")
    if s.secret_env and not s.secret:
        s.secret = os.environ.get(s.secret_env, "")
        if not s.secret:
            errors.append(f"server.secret_env: environment variable {s.secret_env} is not set")
    if not s.agent_id:
        errors.append("server.agent_id: required (or server.credentials_file)")
    if not s.secret and not s.secret_env:
        errors.append("server.secret: required — set server.secret_env (recommended), secret or credentials_file")
    if s.timeout_s <= 0:
        errors.append("server.timeout_s: must be > 0")
    if not 1 <= s.batch_size <= 500:
        errors.append("server.batch_size: between 1 and 500")
    d = c.driver
    if d.name not in ("wxauto", "wxauto4", "simulator"):
        errors.append(f"driver.name: one of wxauto, wxauto4, simulator — got {d.name!r}")
    elif d.name != "simulator" and not d.watch_chats:
        errors.append("driver.watch_chats: list the chats to answer (the wxauto drivers listen to named chats)")
    p = c.pacing
    for name in ("min_gap_s", "typing_s_per_char", "max_typing_s", "jitter_s"):
        if getattr(p, name) < 0:
            errors.append(f"pacing.{name}: must be ≥ 0")
    for name in ("per_minute_cap", "daily_cap"):
        if getattr(p, name) < 0:
            errors.append(f"pacing.{name}: must be ≥ 0 (0 = no cap)")
    try:
        parse_quiet_hours(p.quiet_hours)
    except ValueError as exc:
        errors.append(f"pacing.quiet_hours: {exc}")
    if c.queue.capacity < 1:
        errors.append("queue.capacity: must be at least 1")
    if c.heartbeat_s < 1:
        errors.append("heartbeat_s: must be at least 1 second")
    if c.poll_interval_s <= 0:
        errors.append("poll_interval_s: must be > 0")
    if c.reconnect.initial_s <= 0 or c.reconnect.max_s < c.reconnect.initial_s:
        errors.append("reconnect: need 0 < initial_s ≤ max_s")
    if c.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        errors.append(f"log.level: one of DEBUG, INFO, WARNING, ERROR — got {c.log.level!r}")


def load(path: str | os.PathLike, overrides: dict | None = None) -> AgentConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    if overrides:
        data = merge(data, overrides)
    return parse(data, base_dir=Path.cwd())


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
