"""Secrets in the database: AES-256-GCM, authenticated, stored as ciphertext."""

import pytest
from django.db import connection, models

from apps.core import crypto
from apps.core.fields import EncryptedTextField


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
