"""The one validator of an inbound customer message, for REST and WebSocket alike; the same models are
the OpenAPI description of the ingest endpoint (apps.messages.openapi).

pydantic (the openai SDK's own dependency): ≈ 2 µs per message, where a DRF serializer took 250 µs
(bench/README.md, issue 14) — at 5,000 messages/s that is the difference between 1 % and 125 % of a core.
"""

from datetime import datetime
from typing import Annotated, Literal

from django.conf import settings
from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from apps.core.inputs import sane_timestamp, text


class InboundMessage(BaseModel):
    """One customer message as the agent saw it in WeChat."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, title="InboundMessage")

    id: Annotated[
        text(128, required=True),
        Field(validation_alias=AliasChoices("id", "client_msg_id"), description="stable client message id"),
    ]
    chat_id: text(200) = ""
    chat_name: Annotated[
        text(200), Field(validation_alias=AliasChoices("chat_name", "chat"), description="or chat_id")
    ] = ""
    chat_type: Literal["private", "group"] = "private"
    sender: text(200) = ""
    content: Annotated[
        text(1_000_000, required=True, strict=True), Field(description="at most MESSAGE_MAX_CHARS characters")
    ]
    type: text(20) = "text"
    timestamp: Annotated[
        datetime | None,
        AfterValidator(sane_timestamp),
        Field(description="epoch seconds / milliseconds or ISO 8601; from 2000-01-01 to TIMESTAMP_MAX_FUTURE s ahead"),
    ] = None
    is_at_me: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _complete(self) -> "InboundMessage":
        if not self.chat_name:
            if not self.chat_id:
                raise ValueError("chat_name or chat_id is required")
            self.chat_name = self.chat_id
        if len(self.content) > settings.MESSAGE_MAX_CHARS:
            raise ContentTooLong(settings.MESSAGE_MAX_CHARS, len(self.content))
        return self


class IngestRequest(BaseModel):
    """`POST /api/v1/messages` body."""

    message: InboundMessage


class ContentTooLong(ValueError):
    def __init__(self, limit: int, length: int):
        super().__init__(f"Ensure this field has no more than {limit} characters (got {length}).")


class Invalid(Exception):
    """Field errors, DRF style: {field: [messages]}; `code` is `content_too_long` or `invalid`."""

    def __init__(self, errors: dict[str, list[str]], code: str = "invalid"):
        super().__init__(errors)
        self.errors = errors
        self.code = code


def validate(item) -> InboundMessage:
    """`item` (decoded JSON) as an InboundMessage, or `Invalid`."""
    try:
        return InboundMessage.model_validate(item)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> Invalid:
    errors: dict[str, list[str]] = {}
    code = "invalid"
    for error in exc.errors(include_url=False, include_input=False):
        field = str(error["loc"][0]) if error["loc"] else ("message" if error["type"] == "model_type" else "chat_name")
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ContentTooLong):
            field, code = "content", "content_too_long"
        message = str(cause) if isinstance(cause, ValueError) else error["msg"]
        errors.setdefault(field, []).append(message.removeprefix("Value error, "))
    return Invalid(errors, code)
