"""`manage.py validate_env` and the deploy checks: what production needs, secrets masked."""

import base64
import os

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.core.keys import mask_secret
from apps.core.tests.helpers import embedded_env, run_manage


def test_validate_env_masks_secrets_and_fails_on_missing_required(monkeypatch, capsys):
    monkeypatch.setenv("SECRET_KEY", "s" * 30 + "abcdefghijklmnopqrstuvwxyz0123")
    monkeypatch.setenv("DATABASE_URL", "postgres://wxcs:hunter2pass@db:5432/wxcs")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.delenv("FIELD_ENCRYPTION_KEY", raising=False)
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-1234567890abcdefcd23")
    with pytest.raises(CommandError) as excinfo:
        call_command("validate_env", "--production")
    assert excinfo.value.returncode == 1
    assert "FIELD_ENCRYPTION_KEY" in str(excinfo.value)
    output = capsys.readouterr().out
    assert "sk-1…cd23" in output
    assert "1234567890abcdef" not in output
    assert "hunter2pass" not in output
    assert "FIELD_ENCRYPTION_KEY: missing" in output


def test_validate_env_passes_with_everything_required(monkeypatch, capsys):
    monkeypatch.setenv("SECRET_KEY", "x" * 20 + "abcdefghijklmnopqrstuvwxyz0123456789")
    monkeypatch.setenv("DATABASE_URL", "postgres://wxcs@db:5432/wxcs")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("FIELD_ENCRYPTION_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    call_command("validate_env", "--production")
    assert "production: environment OK" in capsys.readouterr().out


def test_validate_env_rejects_a_malformed_encryption_key(monkeypatch, capsys):
    monkeypatch.setenv("FIELD_ENCRYPTION_KEY", "too-short")
    with pytest.raises(CommandError):
        call_command("validate_env", "--production")
    assert "FIELD_ENCRYPTION_KEY" in capsys.readouterr().out


def test_validate_env_exit_code_from_the_shell(tmp_path):
    result = run_manage("validate_env", "--production", env=embedded_env(tmp_path))
    assert result.returncode == 1
    assert "SECRET_KEY" in result.stderr


def test_deploy_checks_report_the_same_problems(monkeypatch):
    from apps.core.checks import production_environment

    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("FIELD_ENCRYPTION_KEY", "bad")
    messages = {m.msg.split()[0]: m for m in production_environment(None)}
    assert messages["SECRET_KEY"].is_serious()
    assert "32 bytes" in messages["FIELD_ENCRYPTION_KEY"].msg or "base64" in messages["FIELD_ENCRYPTION_KEY"].msg


def test_mask_secret():
    assert mask_secret("sk-1234567890abcdcd23") == "sk-1…cd23"
    assert mask_secret("short") == "…"
    assert mask_secret("") == ""
