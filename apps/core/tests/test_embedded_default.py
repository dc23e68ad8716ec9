"""The embedded default: SQLite in WAL mode, private key files, the platform's processes, the demo login."""

import base64

from django.core.management import call_command

from apps.core.keys import load_or_create_key_file
from apps.core.tests.helpers import embedded_env, run_manage


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
