"""Pacing, takeover detection, config validation, secrets kept out of logs."""

import logging
import random
from datetime import datetime

import pytest

from agent.__main__ import main
from agent.config import ConfigError, load, parse
from agent.logs import SecretFilter
from agent.pacing import PacingConfig, PacingPolicy
from agent.takeover import TakeoverDetector


class Clock:
    def __init__(self, start=None):
        self.now = start if start is not None else datetime(2026, 11, 20, 10, 0, 0).timestamp()

    def __call__(self):
        return self.now


def test_min_gap_typing_and_jitter():
    clock = Clock()
    policy = PacingPolicy(
        PacingConfig(min_gap_s=3, typing_s_per_char=0.1, max_typing_s=2, jitter_s=1, per_minute_cap=0, daily_cap=0),
        clock=clock,
        rng=random.Random(1),
    )
    first = policy.delay_for("你好")  # nothing sent yet: typing + jitter
    assert 0.2 <= first <= 1.2
    policy.record()
    clock.now += 1
    delay = policy.delay_for("x" * 100)  # 2 s of gap left, typing capped at 2 s, jitter ≤ 1 s
    assert 4.0 <= delay <= 5.0


def test_per_minute_and_daily_caps():
    clock = Clock()
    policy = PacingPolicy(
        PacingConfig(min_gap_s=0, typing_s_per_char=0, jitter_s=0, per_minute_cap=3, daily_cap=5), clock=clock
    )
    for _ in range(3):
        assert policy.wait_until_allowed() == 0
        policy.record()
        clock.now += 1
    assert policy.wait_until_allowed() == pytest.approx(57)  # the first of the three leaves the window
    assert policy.violation() is not None
    clock.now += 60
    policy.record()
    policy.record()
    assert policy.violation() == "daily cap 5 reached"
    assert policy.wait_until_allowed() > 3600  # until midnight


def test_quiet_hours_wait_until_morning():
    clock = Clock(datetime(2026, 11, 20, 23, 30).timestamp())
    policy = PacingPolicy(
        PacingConfig(
            min_gap_s=0, typing_s_per_char=0, jitter_s=0, per_minute_cap=0, daily_cap=0, quiet_hours="23:00-07:00"
        ),
        clock=clock,
    )
    assert policy.wait_until_allowed() == pytest.approx(7.5 * 3600)
    assert policy.violation().startswith("quiet hours")
    clock.now = datetime(2026, 11, 21, 7, 0).timestamp()
    assert policy.wait_until_allowed() == 0 and policy.violation() is None


def test_takeover_detector_ignores_bot_echoes():
    clock = Clock(0)
    detector = TakeoverDetector(bot_echo_window_s=60, pause_s=600, clock=clock)
    detector.expect_bot_send("群", "@李四\u2005您好")
    assert detector.observe_self_message("群", "@李四\u2005您好") is False  # our own reply
    assert detector.observe_self_message("群", "@李四\u2005您好") is True  # the same text again: a person
    assert detector.paused("群")
    clock.now = 601
    assert not detector.paused("群")
    detector.expect_bot_send("张三", "好的")
    clock.now += 61
    assert detector.observe_self_message("张三", "好的") is True  # too old to be our echo


def test_config_errors_are_listed_clearly(tmp_path):
    with pytest.raises(ConfigError) as exc:
        parse(
            {
                "server": {"url": "ftp://x", "agent_id": "", "transport": "pigeon", "typo": 1},
                "driver": {"name": "wxauto"},
                "pacing": {"min_gap_s": -1, "quiet_hours": "late"},
                "queue": {"capacity": "many"},
                "heartbeat_s": 0,
                "extra": {},
            }
        )
    text = str(exc.value)
    for expected in (
        "server.url",
        "server.transport",
        "server.typo: unknown setting",
        "server.agent_id: required",
        "server.secret: required",
        "driver.watch_chats",
        "pacing.min_gap_s",
        "pacing.quiet_hours",
        "queue.capacity: expected a whole number",
        "heartbeat_s",
        "extra: unknown section",
    ):
        assert expected in text, expected


def test_config_file_with_secret_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "agent.yaml"
    path.write_text(
        "server:\n  url: https://wxcs.example.com\n  agent_id: shop-01\n  secret_env: WXCS_TEST_SECRET\n"
        "driver:\n  name: wxauto4\n  watch_chats: [张三]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="WXCS_TEST_SECRET is not set"):
        load(path)
    monkeypatch.setenv("WXCS_TEST_SECRET", "s3cret-value-123456")
    config = load(path)
    assert config.server.secret == "s3cret-value-123456" and config.driver.name == "wxauto4"
    assert config.redacted()["server"]["secret"] == "***"
    assert "s3cret" not in repr(config.server)


def test_credentials_file_as_written_by_create_agent(tmp_path):
    creds = tmp_path / "demo_agent.json"
    creds.write_text('{"agent_id": "agt_demo", "api_key": "k-123456789"}', encoding="utf-8")
    config = parse({"server": {"credentials_file": str(creds)}, "driver": {"name": "simulator"}})
    assert config.server.agent_id == "agt_demo" and config.server.secret == "k-123456789"


def test_cli_check_config(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("driver: [oops", encoding="utf-8")
    assert main(["--config", str(path), "--check-config"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main([]) == 2
    creds = tmp_path / "c.json"
    creds.write_text('{"agent_id": "a", "api_key": "k-123456789"}', encoding="utf-8")
    assert main(["--simulate", "--credentials", str(creds), "--check-config"]) == 0


def test_secrets_never_reach_a_log_line():
    flt = SecretFilter()
    flt.add("my-agent-secret-xyz")
    record = logging.LogRecord(
        "t",
        logging.INFO,
        __file__,
        1,
        "login with %s failed; token=abc.def header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9"
        '.eyJzdWIiOiJhZ3QifQ.c2lnbmF0dXJlLXZhbHVl api_key="k-998877"',
        ("my-agent-secret-xyz",),
        None,
    )
    flt.filter(record)
    line = record.getMessage()
    assert "my-agent-secret-xyz" not in line and "eyJ" not in line and "k-998877" not in line
    assert "abc.def" not in line


def test_the_example_config_is_valid(monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("WXCS_AGENT_SECRET", "example-secret-123456")
    config = load(Path(__file__).resolve().parents[1] / "agent.example.yaml")
    assert config.driver.name == "wxauto" and config.queue.capacity == 1000 and config.pacing.min_gap_s == 3
