import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from apps.core import aio
from apps.core.sqlite_to_postgres import IMPORT_MARKER_TABLE, concrete_models, dependency_order
from apps.core.testing import BASE_DIR
from apps.costs.models import UsageRecord
from apps.customers.models import Contact, Customer
from apps.erp.models import Contract
from apps.knowledge.models import Entry
from apps.llm_gateway.models import Provider
from apps.messages import ingest, pipeline
from apps.messages.models import Message, Reply
from apps.messages.validation import validate
from apps.rules.models import Rule
from conftest import requires_services

pytestmark = requires_services


def sqlite_env(path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "REQUIRE_SERVICES")}
    env.update(WXCS_TESTING="0", SQLITE_PATH=str(path), WXCS_VAR_DIR=str(path.parent))
    from apps.core.crypto import current_key

    env["FIELD_ENCRYPTION_KEY"] = current_key()  # same key: encrypted columns stay readable after the move
    return env


def manage(env, *args, timeout=600):
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture
def _drop_import_marker():
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {IMPORT_MARKER_TABLE}")


@pytest.fixture(scope="module")
def filled_sqlite(tmp_path_factory):
    path = tmp_path_factory.mktemp("embedded") / "wxcs.sqlite3"
    env = sqlite_env(path)
    manage(env, "migrate", "-v0")
    manage(env, "shell", "-c", "from apps.core.tests.fill_sqlite import fill; fill(10000)")
    return path


def test_dependency_order_puts_parents_first():
    order = [m._meta.db_table for m in dependency_order(concrete_models())]
    assert order.index("auth_user") < order.index("django_admin_log")
    assert order.index("django_content_type") < order.index("auth_permission")
    assert order.index("auth_group") < order.index("auth_group_permissions")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_drop_import_marker")
def test_copies_verifies_and_the_app_works_on_the_result(filled_sqlite, capsys):
    call_command("migrate_sqlite_to_postgres", "--source", str(filled_sqlite), "--no-progress")
    out = capsys.readouterr().out
    assert "Migration complete: every table verified." in out
    assert User.objects.count() == 50
    assert LogEntry.objects.count() == 500
    assert Message.objects.count() == 10000 and Reply.objects.count() == 10000
    assert Customer.objects.count() == 239 and Contact.objects.count() == 478 and Contract.objects.count() == 600
    assert UsageRecord.objects.count() == 10000 and Rule.objects.count() == 30 and Entry.objects.count() == 500
    # encrypted columns moved as ciphertext and still decrypt
    assert Provider.objects.get(name="deepseek").api_key == "sk-migrated-secret-0001"
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM llm_gateway_provider WHERE name = 'deepseek'")
        assert cursor.fetchone()[0].startswith("enc:v1:")
    reply = Reply.objects.select_related("message").order_by("id").first()
    assert reply.latency_ms["total"] == 9.8 and reply.message.is_at_me is True
    assert LogEntry.objects.order_by("action_time").first().object_repr == "用户 0"
    # sequences were reset: a new row gets a fresh id
    top = User.objects.order_by("-id").first().id
    assert User.objects.create(username="after-migration").id > top
    # and the pipeline works on the migrated data: a new message gets a new id and a reply
    last_message = Message.objects.order_by("-id").first()
    item = {
        "id": "after-migration-1",
        "chat_name": "迁移后的新客户",
        "sender": "新客户",
        "content": "E01 报警怎么处理？",
    }
    [accepted] = aio.run(ingest.ingest(last_message.agent_id, [validate(item)]))
    assert accepted.created and accepted.message_id > last_message.id
    assert aio.run(pipeline.process(accepted.message_id, accepted.conversation_id)) == "decided"
    new_reply = Reply.objects.get(message_id=accepted.message_id)
    assert new_reply.id > Reply.objects.exclude(pk=new_reply.pk).order_by("-id").first().id
    assert new_reply.action in ("reply", "transfer_human") and new_reply.content

    # a second run refuses without --truncate and changes nothing
    with pytest.raises(CommandError) as refused:
        call_command("migrate_sqlite_to_postgres", "--source", str(filled_sqlite), "--no-progress")
    assert refused.value.returncode == 2
    assert "--truncate" in str(refused.value)
    assert User.objects.filter(username="after-migration").exists()

    call_command("migrate_sqlite_to_postgres", "--source", str(filled_sqlite), "--no-progress", "--truncate")
    assert not User.objects.filter(username="after-migration").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_drop_import_marker")
def test_dry_run_writes_nothing(filled_sqlite, capsys):
    call_command("migrate_sqlite_to_postgres", "--source", str(filled_sqlite), "--dry-run")
    out = capsys.readouterr().out
    assert "auth_user" in out and "Dry run: nothing written" in out
    assert User.objects.count() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_drop_import_marker")
def test_verification_catches_a_difference(filled_sqlite, monkeypatch):
    from apps.core import sqlite_to_postgres

    real_copy = sqlite_to_postgres.SqliteToPostgres._copy_table

    def copy_then_tamper(self, cursor, plan, progress):
        rows = real_copy(self, cursor, plan, progress)
        if plan.table == "auth_user":
            cursor.execute("UPDATE auth_user SET first_name = 'tampered' WHERE username = 'user3'")
        return rows

    monkeypatch.setattr(sqlite_to_postgres.SqliteToPostgres, "_copy_table", copy_then_tamper)
    with pytest.raises(CommandError) as failed:
        call_command("migrate_sqlite_to_postgres", "--source", str(filled_sqlite), "--no-progress")
    assert failed.value.returncode == 1
    assert "auth_user (checksum differs)" in str(failed.value)


def test_refuses_a_missing_source(tmp_path):
    with pytest.raises(CommandError) as refused:
        call_command("migrate_sqlite_to_postgres", "--source", str(tmp_path / "nope.sqlite3"))
    assert refused.value.returncode == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_drop_import_marker")
def test_refuses_a_source_behind_the_code(tmp_path):
    path = tmp_path / "old.sqlite3"
    manage(sqlite_env(path), "migrate", "auth", "0001", "-v0")
    with pytest.raises(CommandError) as refused:
        call_command("migrate_sqlite_to_postgres", "--source", str(path))
    assert refused.value.returncode == 2
    assert "behind" in str(refused.value)
    assert connection.vendor == "postgresql"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_drop_import_marker")
def test_a_dangling_foreign_key_is_refused_and_nothing_is_written(filled_sqlite, tmp_path):
    broken = tmp_path / "broken.sqlite3"
    shutil.copy(filled_sqlite, broken)
    with sqlite3.connect(broken) as db:
        db.execute(
            "UPDATE wxmessages_reply SET message_id = 99999999 WHERE id = (SELECT MIN(id) FROM wxmessages_reply)"
        )
    with pytest.raises(CommandError) as failed:
        call_command("migrate_sqlite_to_postgres", "--source", str(broken), "--no-progress")
    assert failed.value.returncode == 3
    assert "wxmessages_reply.message_id: 1 row(s)" in str(failed.value)
    assert Reply.objects.count() == 0 and User.objects.count() == 0  # rolled back whole
