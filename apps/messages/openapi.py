"""The OpenAPI description of `POST /api/v1/messages`. The endpoint is served from ASGI (apps.messages.asgi),
outside Django's URLconf, so drf-spectacular cannot find it: this postprocessing hook adds it, with the
request body generated from the validator's own models (apps.messages.validation)."""

from django.conf import settings

from apps.messages.validation import IngestRequest

REF = "#/components/schemas/{model}"

ACCEPTED = {
    "type": "object",
    "properties": {
        "message_id": {"type": "integer"},
        "status": {"type": "string", "enum": ["accepted", "duplicate"]},
        "client_id": {"type": "string"},
        "duplicate": {"type": "boolean"},
    },
    "required": ["message_id", "status", "client_id", "duplicate"],
}
DECISION = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["reply", "ignore", "transfer_human"], "nullable": True},
        "content": {"type": "string"},
        "confidence": {"type": "number", "nullable": True},
        "message_id": {"type": "integer"},
        "reply_id": {"type": "integer", "nullable": True},
        "status": {"type": "string", "description": "reply status, or `processing` when the wait timed out"},
    },
}


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
    }


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document_ingest(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    request_schema = IngestRequest.model_json_schema(ref_template=REF)
    schemas.update(request_schema.pop("$defs", {}))
    schemas["IngestRequest"] = request_schema
    schemas.setdefault("Error", {"type": "object", "properties": {"detail": {}, "code": {"type": "string"}}})
    result.setdefault("paths", {})["/api/v1/messages"] = {"post": _operation()}
    return result


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
            "202": _json(ACCEPTED, "stored (or a duplicate), decision queued"),
            "200": _json(DECISION, "decided within `?wait`"),
            "400": _error("invalid message: `{detail: {message: {field: [..]}}, code: invalid|content_too_long}`"),
            "401": _error("missing, bad or expired token"),
            "413": _error("body larger than INGEST_MAX_BODY_BYTES"),
            "429": _error("throttled; see Retry-After"),
        },
    }
