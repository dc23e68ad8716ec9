from django.db import models

from apps.core import crypto


class EncryptedTextField(models.TextField):
    """A text column stored AES-256-GCM encrypted; Python code sees the plaintext.

    Not searchable or orderable by content (each write uses a fresh nonce).
    """

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return crypto.encrypt(value)

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return crypto.decrypt(value)
