"""The OpenAPI description of `POST /api/v1/messages`. The endpoint is served from ASGI (apps.messages.asgi),
outside Django's URLconf, so drf-spectacular cannot find it: this postprocessing hook adds it, with the
request body generated from the validator's own models (apps.messages.validation)."""

from django.conf import settings

from apps.messages.validation import IngestRequest

REF = "#/components/schemas/{model}"

DECISION_FIELDS = {
    "action": {"type": "string", "enum": ["reply", "ignore", "transfer_human"], "nullable": True},
    "content": {"type": "string"},
    "confidence": {"type": "number", "nullable": True},
    "message_id": {"type": "integer"},
    "reply_id": {"type": "integer", "nullable": True},
}
ACCEPTED = {
    "type": "object",
    "properties": {
        **DECISION_FIELDS,
        "status": {
            "type": "string",
            "enum": ["accepted", "duplicate", "processing"],
            "description": "`processing`: `?wait` ran out before the decision (the decision fields are then present)",
        },
        "client_id": {"type": "string"},
        "duplicate": {"type": "boolean"},
    },
    "required": ["message_id", "status", "client_id", "duplicate"],
}
DECISION = {
    "type": "object",
    "properties": {
        **DECISION_FIELDS,
        "status": {"type": "string", "description": "the reply's status"},
    },
    "required": [*DECISION_FIELDS, "status"],
}


def _error(description: str, model: str = "Error") -> dict:
    """The error bodies' components are declared by apps.core.openapi for every DRF operation."""
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document_ingest(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    request_schema = _nullable(IngestRequest.model_json_schema(ref_template=REF))
    schemas.update(request_schema.pop("$defs", {}))
    schemas["IngestRequest"] = request_schema
    result.setdefault("paths", {})["/api/v1/messages"] = {"post": _operation()}
    return result


def _nullable(schema):
    """pydantic writes JSON Schema's `anyOf: [X, {type: null}]`; OpenAPI 3.0 (drf-spectacular's) says `nullable`."""
    if isinstance(schema, list):
        return [_nullable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: _nullable(value) for key, value in schema.items()}
    options = schema.get("anyOf", [])
    if {"type": "null"} in options and len(options) == 2:
        (other,) = [option for option in options if option != {"type": "null"}]
        schema = {**{k: v for k, v in schema.items() if k != "anyOf"}, **other, "nullable": True}
    return schema


def _operation() -> dict:
    return {
        "operationId": "messages_ingest",
        "tags": ["messages"],
        "summary": "Ingest a customer message",
        "description": (
            "Stores the message (idempotent per agent + `message.id`: a repeat answers the same `message_id` with "
            "`status: duplicate`) and queues its decision. `?wait=N` (0–INGEST_MAX_WAIT s) waits for the decision "
            "without holding a server thread and answers `{action, content, confidence, message_id, reply_id}`; "
            "on timeout 202 with `status: processing`. Limits: content ≤ MESSAGE_MAX_CHARS (400 "
            "`content_too_long`), body ≤ INGEST_MAX_BODY_BYTES (413), INGEST_RATE_LIMIT messages per "
            "INGEST_RATE_WINDOW per agent (429 with Retry-After once the window is used up; the request that uses it "
            "up is still accepted)."
        ),
        "parameters": [
            {
                "name": "wait",
                "in": "query",
                "schema": {"type": "number", "minimum": 0, "maximum": settings.INGEST_MAX_WAIT},
                "description": "seconds to wait for the decision",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="IngestRequest")}}},
        },
        "security": [{"agentJWT": []}],
        "responses": {
            "202": _json(ACCEPTED, "stored (or a duplicate), decision queued (or not decided within `?wait`)"),
            "200": _json(DECISION, "decided within `?wait`"),
            "400": _error(
                "invalid message: `{detail: {message: {field: [..]}}, code: invalid|content_too_long}`, or `code: "
                "malformed` (not JSON)",
                "ValidationError",
            ),
            "401": _error("missing, bad or expired token"),
            "413": _error("body larger than INGEST_MAX_BODY_BYTES"),
            "429": _error("throttled; see Retry-After"),
        },
    }
