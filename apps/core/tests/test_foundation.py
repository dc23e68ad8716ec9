import base64
import os
import subprocess
import sys

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, models

from apps.core import crypto
from apps.core.fields import EncryptedTextField
from apps.core.keys import load_or_create_key_file, mask_secret
from apps.core.testing import BASE_DIR, Process, free_port, running, start_daphne
from conftest import requires_services


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


def test_embedded_sqlite_runs_in_wal_mode(tmp_path):
    result = run_manage(
        "shell",
        "-c",
        "from django.db import connection\n"
        "c = connection.cursor()\n"
        "pragmas = ('journal_mode', 'synchronous', 'temp_store', 'busy_timeout')\n"
        "print([c.execute(f'PRAGMA {p}').fetchone()[0] for p in pragmas])",
        env=embedded_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    # WAL, synchronous=NORMAL (1), temp_store=MEMORY (2), busy timeout 20 s
    assert result.stdout.strip().splitlines()[-1] == "['wal', 1, 2, 20000]"
    assert (tmp_path / "var" / "wxcs.sqlite3").exists()


def test_embedded_default_generates_private_key_files(tmp_path):
    key = load_or_create_key_file(tmp_path / "k.key")
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert oct((tmp_path / "k.key").stat().st_mode & 0o777) == "0o600"
    assert load_or_create_key_file(tmp_path / "k.key") == key


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@requires_services
@pytest.mark.django_db
def test_readyz_ok_when_every_dependency_answers(async_client):
    pass


@requires_services
@pytest.mark.django_db(transaction=True)
def test_readyz_turns_503_naming_redis_when_it_is_unreachable(live_env, tmp_path):
    """A real Daphne on its own Redis; kill that Redis and /readyz must say what failed."""
    port = free_port()
    redis = Process(
        "redis",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        live_env,
        tmp_path,
    )
    env = dict(live_env, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    with running(redis):
        daphne, base_url = start_daphne(env, tmp_path)
        with running(daphne):
            ready = httpx.get(f"{base_url}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert ready.json()["failed"] == []
            redis.kill()
            down = httpx.get(f"{base_url}/readyz", timeout=10)
    assert down.status_code == 503
    body = down.json()
    assert body["status"] == "unavailable"
    assert set(body["failed"]) == {"cache", "channel_layer", "broker"}
    assert body["checks"]["database"]["ok"] is True
    assert "Connection" in body["checks"]["cache"]["error"]


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


class Vault(models.Model):  # noqa: DJ008
    secret = EncryptedTextField(blank=True)

    class Meta:
        app_label = "core"
        db_table = "core_test_vault"


@pytest.fixture
def vault_table(transactional_db):  # SQLite's schema editor refuses to run inside the test's transaction
    with connection.schema_editor() as editor:
        editor.create_model(Vault)
    yield
    with connection.schema_editor() as editor:
        editor.delete_model(Vault)


def test_encrypted_field_stores_ciphertext_and_reads_plaintext(vault_table):
    Vault.objects.create(secret="sk-very-secret-api-key-明文")
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM core_test_vault")
        raw = cursor.fetchone()[0]
    assert raw.startswith("enc:v1:")
    assert "very-secret" not in raw and "明文" not in raw
    assert Vault.objects.get().secret == "sk-very-secret-api-key-明文"


def test_encryption_is_authenticated():
    stored = crypto.encrypt("password")
    assert stored != crypto.encrypt("password")  # fresh nonce every time
    tampered = stored[:-4] + ("AAAA" if not stored.endswith("AAAA") else "BBBB")
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(tampered)
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt("plain text")


def test_admin_is_chinese_and_the_demo_supervisor_can_log_in(client, db, capsys):
    call_command("seed_demo")
    call_command("seed_demo")  # idempotent
    output = capsys.readouterr().out
    password = output.split("password: ")[1].split()[0]
    assert client.login(username="supervisor", password=password)
    page = client.get("/admin/")
    assert page.status_code == 200
    assert "微信客服中台" in page.content.decode()
    assert "站点管理" in page.content.decode() or "管理后台" in page.content.decode()


def test_run_platform_starts_one_worker_per_configured_process(settings):
    """CELERY_WORKER_PROCESSES workers, each a distinct Celery node (same-named nodes clash), same queues."""
    from apps.core.platform import processes

    settings.CELERY_WORKER_PROCESSES = 1
    assert [name for name in processes() if name.startswith("worker")] == ["worker"]
    settings.CELERY_WORKER_PROCESSES = 2
    workers = {name: command for name, command in processes().items() if name.startswith("worker")}
    assert sorted(workers) == ["worker1", "worker2"]
    assert workers["worker1"].endswith("-n worker1@%h") and workers["worker2"].endswith("-n worker2@%h")
    assert all("-Q default,messages,sync" in command for command in workers.values())
