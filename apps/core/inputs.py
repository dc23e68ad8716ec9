"""The rules every input from outside obeys, whichever door it comes through (REST ingest on ASGI, DRF views,
WebSocket frames): one text rule, one JSON decoder with size and depth limits, one timestamp window.

- Text: no NUL (PostgreSQL cannot store it) and no lone surrogate (not encodable as UTF-8; JSON can carry one
  as `"\\ud800"`). DRF's CharField applies the same rule natively (ProhibitNullCharactersValidator,
  ProhibitSurrogateCharactersValidator); pydantic models use `text()`, other values `printable()`.
- JSON: at most `max_bytes` (413 / `too_large`), nesting at most JSON_MAX_DEPTH (400 / `too_deep`), no NaN or
  Infinity (400 / `malformed`: PostgreSQL's jsonb refuses them).
- Timestamps: from 2000-01-01 UTC to TIMESTAMP_MAX_FUTURE seconds ahead of the server's clock.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from django.conf import settings
from django.utils import timezone
from pydantic import AfterValidator, BeforeValidator, StringConstraints
from rest_framework.exceptions import APIException
from rest_framework.parsers import JSONParser

EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)


# --- text ------------------------------------------------------------------------------------------
def printable(value: str) -> str:
    """`value`, or ValueError when it holds a NUL character or an unpaired surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must not contain unpaired surrogates") from exc
    return value


def _none_as_empty(value):
    return "" if value is None else value


def text(max_length: int, *, required: bool = False, strict: bool = False):
    """A pydantic string type: bounded, printable; optional ones take null as empty."""
    constrained = Annotated[
        str, StringConstraints(min_length=1 if required else 0, max_length=max_length, strict=strict)
    ]
    if required:
        return Annotated[constrained, AfterValidator(printable)]
    return Annotated[constrained, BeforeValidator(_none_as_empty), AfterValidator(printable)]


# --- timestamps ------------------------------------------------------------------------------------
def sane_timestamp(value: datetime | None) -> datetime | None:
    """`value` made aware, or ValueError outside [2000-01-01 UTC, now + TIMESTAMP_MAX_FUTURE s]."""
    if value is None:
        return None
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    latest = timezone.now() + timedelta(seconds=settings.TIMESTAMP_MAX_FUTURE)
    if not EARLIEST_TIMESTAMP <= value <= latest:
        raise ValueError(f"must be between 2000-01-01 and {settings.TIMESTAMP_MAX_FUTURE} s from now")
    return value


# --- JSON ------------------------------------------------------------------------------------------
class InputRefused(ValueError):
    """A body or frame refused as a whole: `status` (HTTP), `code` (error body / frame), message."""

    status = 400
    code = "malformed"


class TooLarge(InputRefused):
    status = 413
    code = "too_large"


class TooDeep(InputRefused):
    code = "too_deep"


def _no_constants(name: str):
    raise InputRefused(f"{name} is not allowed in JSON")


def load_json(raw: bytes | str, max_bytes: int) -> Any:
    """Decode `raw` (a body or a frame) under the size and depth limits; InputRefused otherwise."""
    if _size(raw, max_bytes) > max_bytes:
        raise TooLarge(f"larger than {max_bytes} bytes")
    try:
        data = json.loads(raw or b"", parse_constant=_no_constants)
    except RecursionError:
        raise TooDeep(f"nested deeper than {settings.JSON_MAX_DEPTH} levels") from None
    except InputRefused:
        raise
    except ValueError:
        raise InputRefused("malformed JSON") from None
    if _deeper_than(data, settings.JSON_MAX_DEPTH, raw):
        raise TooDeep(f"nested deeper than {settings.JSON_MAX_DEPTH} levels")
    return data


def _size(raw: bytes | str, max_bytes: int) -> int:
    """Bytes of `raw` as UTF-8, encoding only when it matters (a character is 1 to 4 bytes)."""
    if isinstance(raw, bytes) or len(raw) > max_bytes or 4 * len(raw) <= max_bytes:
        return len(raw)
    return len(raw.encode("utf-8", "surrogatepass"))


def _deeper_than(data: Any, limit: int, raw: bytes | str) -> bool:
    opening = (b"[", b"{") if isinstance(raw, bytes) else ("[", "{")
    if not isinstance(data, dict | list) or raw.count(opening[0]) + raw.count(opening[1]) <= limit:
        return False  # cannot nest deeper than it has brackets
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        for child in value.values() if type(value) is dict else value:
            kind = type(child)
            if kind is dict or kind is list:
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


class BodyRefused(APIException):
    """A DRF view's body refused by `load_json`, rendered as `{detail, code}`."""

    def __init__(self, exc: InputRefused):
        self.status_code = exc.status
        super().__init__(str(exc), code=exc.code)


class LimitedJSONParser(JSONParser):
    """DRF's JSON parser under `load_json`'s limits (API_MAX_BODY_BYTES, JSON_MAX_DEPTH)."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.API_MAX_BODY_BYTES
        try:
            return load_json(stream.read(limit + 1), limit)
        except InputRefused as exc:
            raise BodyRefused(exc) from None
