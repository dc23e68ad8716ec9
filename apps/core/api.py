"""Error bodies of the REST API: every DRF error answers `{"detail": ..., "code": ...}` (apps/messages/PROTOCOL.md,
"Error bodies"). `exception_handler` is DRF's EXCEPTION_HANDLER; the serializers describe the same bodies in the
OpenAPI schema (apps.core.openapi declares them on every operation)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.views import exception_handler as drf_exception_handler

# DRF's own codes, renamed where the agent protocol already has a word for the same thing (ingest and the
# WebSocket answer `malformed` for a body that is not JSON).
RENAMED_CODES = {"parse_error": "malformed"}


def exception_handler(exc, context):
    """DRF's handler (status, WWW-Authenticate, Retry-After, rollback), with the body rewritten to {detail, code}.
    Validation errors keep DRF's field map as `detail` (`{field: [message, ...]}`), code `invalid`."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # not an API error: Django's 500 handling (logged, never a traceback to the client)
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": data if isinstance(data, dict) else {"non_field_errors": data}, "code": "invalid"}
    elif isinstance(data, dict) and set(data) == {"detail"}:
        detail = data["detail"]  # an ErrorDetail: DRF's handler turns Http404 / PermissionDenied into one
        response.data = {"detail": str(detail), "code": _code(detail.code, response.status_code)}
    else:  # an APIException raised with a list or dict of messages: kept whole, like a field map
        response.data = {"detail": data, "code": exc.default_code}
    return response


def _code(code: str, status_code: int) -> str:
    if code == exceptions.NotAuthenticated.default_code and status_code == status.HTTP_401_UNAUTHORIZED:
        # 401 is only answered where a bearer token is expected (the agent endpoints): no token was sent.
        return "missing_token"
    return RENAMED_CODES.get(code, code)


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="human-readable, in the server's language")
    code = serializers.CharField(help_text='machine-readable; the list is in PROTOCOL.md, "Error bodies"')


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {
                "type": "object",
                "description": "field → list of messages (nested for nested objects)",
                "additionalProperties": True,
            },
        ]
    }
)
class ErrorDetailField(serializers.JSONField):
    pass


class ValidationErrorSerializer(serializers.Serializer):
    detail = ErrorDetailField(help_text="`invalid`: field → list of messages; otherwise a sentence")
    code = serializers.CharField(help_text="`invalid` (a field failed validation), `malformed` (not JSON), ...")
