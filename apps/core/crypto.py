"""AES-256-GCM for secrets stored in the database (provider API keys, ERP password).

Stored form: `enc:v1:` + urlsafe-base64(12-byte nonce ‖ ciphertext ‖ tag). The key is 32 bytes,
urlsafe-base64 in FIELD_ENCRYPTION_KEY; the embedded default keeps one in var/ (0600).
"""

import base64
import binascii
import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.core.keys import load_or_create_key_file

PREFIX = "enc:v1:"
NONCE_BYTES = 12


class DecryptionError(ValueError):
    """The stored value is not ours or the key is wrong."""


def decode_key(raw: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(raw.encode())
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY is not valid base64") from exc
    if len(key) != 32:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY must decode to 32 bytes (AES-256)")
    return key


@functools.cache
def _cipher(raw_key: str) -> AESGCM:
    return AESGCM(decode_key(raw_key))


def current_key() -> str:
    return settings.FIELD_ENCRYPTION_KEY or load_or_create_key_file(settings.FIELD_ENCRYPTION_KEY_FILE)


def encrypt(plaintext: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = _cipher(current_key()).encrypt(nonce, plaintext.encode(), PREFIX.encode())
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def decrypt(stored: str) -> str:
    if not stored.startswith(PREFIX):
        raise DecryptionError("value is not encrypted with enc:v1")
    try:
        blob = base64.urlsafe_b64decode(stored[len(PREFIX) :].encode())
        plain = _cipher(current_key()).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], PREFIX.encode())
    except (binascii.Error, ValueError, InvalidTag) as exc:
        raise DecryptionError("cannot decrypt: wrong FIELD_ENCRYPTION_KEY or corrupted value") from exc
    return plain.decode()
