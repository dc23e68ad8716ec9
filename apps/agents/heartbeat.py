"""The one validator of an agent heartbeat, for REST (`POST /api/v1/heartbeat`) and the `heartbeat` frame alike;
its JSON schema is also the OpenAPI description of the REST body.

Every field is typed and bounded, the whole is at most HEARTBEAT_MAX_BYTES as JSON, and unknown fields are
dropped (a newer agent may report more; nothing unknown is stored). So what is stored can always be read back
as numbers and short strings by /metrics, /dashboard/, the alert rules and admin.
"""

import json
from typing import Annotated, Literal

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from apps.core.inputs import TooLarge, text

COUNT_MAX = 10**12

Count = Annotated[int, Field(ge=0, le=COUNT_MAX)]
Measure = Annotated[float, Field(ge=0, le=10**9)]


class Heartbeat(BaseModel):
    """The agent's latest state: resources, WeChat status, offline queue and counters (never a secret)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, title="Heartbeat")

    cpu: Annotated[Measure | None, Field(description="CPU %")] = None
    memory: Annotated[Measure | None, Field(description="RSS MB or memory %")] = None
    disk: Annotated[Measure | None, Field(le=100, description="disk used %")] = None
    wx_online: Annotated[bool | None, Field(description="WeChat logged in and reachable")] = None
    queue_size: Annotated[Count | None, Field(description="offline queue length")] = None
    dropped: Annotated[Count | None, Field(description="offline-queue drops")] = None
    dead_letters: Annotated[Count | None, Field(description="messages the server refused for good, set aside")] = None
    processed: Count | None = None
    send_failures: Count | None = None
    agent_version: text(50) = ""
    driver: text(30) = ""
    wechat_account: text(100) = ""
    versions: Annotated[
        dict[text(40), text(100)], Field(max_length=20, description="component versions, e.g. python, wechat")
    ] = {}
    status: Literal["ok", "degraded"] | None = None
    ui_latency_ms: Annotated[Measure | None, Field(description="WeChat UI round trip, ms")] = None
    takeovers: Annotated[Count | None, Field(description="human takeovers seen")] = None
    paused_chats: Annotated[Count | None, Field(description="chats paused by a takeover")] = None
    uptime_s: Count | None = None


class Invalid(ValueError):
    """Field errors, DRF style: {field: [messages]}."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


def validate(data) -> dict:
    """`data` (decoded JSON) as the heartbeat to store: only the fields sent, validated. `TooLarge` over
    HEARTBEAT_MAX_BYTES, `Invalid` for field errors."""
    size = len(json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > settings.HEARTBEAT_MAX_BYTES:
        raise TooLarge(f"heartbeat larger than {settings.HEARTBEAT_MAX_BYTES} bytes")
    try:
        heartbeat = Heartbeat.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors(include_url=False, include_input=False):
            field = str(error["loc"][0]) if error["loc"] else "non_field_errors"
            errors.setdefault(field, []).append(error["msg"].removeprefix("Value error, "))
        raise Invalid(errors) from None
    return heartbeat.model_dump(exclude_unset=True)


def openapi_schema() -> dict:
    return Heartbeat.model_json_schema()
