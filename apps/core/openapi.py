"""The OpenAPI schema's error responses, declared in one place: every operation lists the errors DRF can answer
for it, each with the body `apps.core.api.exception_handler` really sends (`{detail, code}`)."""

from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import AllowAny

from apps.core.api import ErrorSerializer, ValidationErrorSerializer

BODY_METHODS = {"POST", "PUT", "PATCH"}
DESCRIPTIONS = {
    400: "invalid input: `code: invalid` with `detail` = {field: [message, ...]}, or `code: malformed`",
    401: "missing, bad or expired credentials (`missing_token`, `invalid_token`, `token_expired`, ...)",
    403: "not allowed (`permission_denied`), or no staff session (`not_authenticated`)",
    404: "no such object (`not_found`)",
    415: "the body is not `application/json` (`unsupported_media_type`)",
    429: "throttled (`throttled`); see Retry-After",
}


class ErrorDocumentingAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is not None:
            responses = operation["responses"]
            for status in sorted(self._error_statuses() | {int(code) for code in responses if code[0] in "45"}):
                responses[str(status)] = self._error_response(status, responses.get(str(status), {}))
        return operation

    def _error_statuses(self) -> set[int]:
        """What DRF itself may answer for this operation, read from the view's own classes."""
        view, statuses = self.view, set()
        has_body = self.method in BODY_METHODS
        if has_body or any(parameter["in"] == "query" for parameter in self._get_parameters()):
            statuses.add(400)
        if has_body:
            statuses.add(415)
        authenticators = view.get_authenticators()
        if authenticators and authenticators[0].authenticate_header(getattr(view, "request", None)):
            statuses.add(401)
        if any(not isinstance(permission, AllowAny) for permission in view.get_permissions()):
            statuses.add(403)
        if "{" in self.path:
            statuses.add(404)
        if view.get_throttles():
            statuses.add(429)
        return statuses

    def _error_response(self, status: int, declared: dict) -> dict:
        serializer = ValidationErrorSerializer if status == 400 else ErrorSerializer
        component = self.resolve_serializer(serializer, "response")
        return {
            "description": declared.get("description") or DESCRIPTIONS.get(status, "error"),
            "content": {"application/json": {"schema": component.ref}},
        }
