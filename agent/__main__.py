"""`python -m agent --config agent.yaml` (Windows, real WeChat) or `python -m agent --simulate`.

--simulate uses the simulator driver with scripted customers; without --config it reads the demo
agent's credentials from var/demo_agent.json (written by `manage.py seed_demo`) and talks to
http://127.0.0.1:8000.

Exit codes: 0 stopped, 2 invalid config, 3 another agent process already holds the state directory
(agent/instance.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from agent import config as config_mod
from agent import logs
from agent.instance import AlreadyRunning, StateDirLock

log = logging.getLogger("agent")

DEMO_CREDENTIALS = "var/demo_agent.json"
EXIT_ALREADY_RUNNING = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent", description="wxcs WeChat agent")
    parser.add_argument("--config", help="YAML config file (see agent/agent.example.yaml)")
    parser.add_argument("--simulate", action="store_true", help="simulator driver with scripted customers")
    parser.add_argument(
        "--credentials", help=f"JSON file with agent_id + api_key (default with --simulate: {DEMO_CREDENTIALS})"
    )
    parser.add_argument("--server", help="server URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--state-dir", help="where the queue and ledgers live")
    parser.add_argument("--inbox", help="simulator: JSONL file another process appends customer messages to")
    parser.add_argument("--outbox", help="simulator: JSONL file every sent reply is appended to")
    parser.add_argument("--no-script", action="store_true", help="simulator: no scripted customers")
    parser.add_argument("--no-pacing", action="store_true", help="send at once (tests and benchmarks)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    return parser


def overrides_from(args) -> dict:
    data: dict = {}
    server: dict = {}
    if args.server:
        server["url"] = args.server
    if args.credentials:
        server["credentials_file"] = args.credentials
    if args.simulate:
        options: dict = {"script": None if args.no_script else "demo"}
        if args.inbox:
            options["inbox_path"] = args.inbox
        if args.outbox:
            options["outbox_path"] = args.outbox
        data["driver"] = {"name": "simulator", "options": options}
        if not args.config and not args.credentials:
            server["credentials_file"] = DEMO_CREDENTIALS
        data.setdefault("state_dir", "var/agent-sim")
        data.setdefault("log", {"file": "var/agent-sim/agent.log"})
    if args.state_dir:
        data["state_dir"] = args.state_dir
    if args.no_pacing:
        data["pacing"] = {
            "min_gap_s": 0,
            "typing_s_per_char": 0,
            "max_typing_s": 0,
            "jitter_s": 0,
            "per_minute_cap": 0,
            "daily_cap": 0,
            "quiet_hours": None,
        }
    if server:
        data["server"] = server
    return data


def load_config(args) -> config_mod.AgentConfig:
    overrides = overrides_from(args)
    if args.config:
        return config_mod.load(args.config, overrides)
    if not args.simulate:
        raise config_mod.ConfigError("give --config agent.yaml (or --simulate to run the simulator)")
    return config_mod.parse(overrides, base_dir=Path.cwd())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args)
    except config_mod.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check_config:
        print("config OK")
        return 0
    try:  # before the log file (in the state directory too) is opened: the first process owns both
        lock = StateDirLock(cfg.state_dir).acquire()
    except AlreadyRunning as exc:
        print(exc, file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    logs.setup(cfg.log.file, cfg.log.level, cfg.log.max_bytes, cfg.log.backups)
    logs.SECRETS.add(cfg.server.secret)
    from agent.runtime import AgentRuntime

    async def run() -> None:
        runtime = AgentRuntime(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, runtime.stop)
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt
                pass
        await runtime.run()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
