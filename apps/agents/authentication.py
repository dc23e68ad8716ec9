"""DRF authentication for agents: `Authorization: Bearer <access JWT>`.

DRF authenticates in sync code: this is the edge where the async token check is bridged (`aio.run`).
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from apps.agents import auth
from apps.core import aio


class AgentJWTAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None  # let other authenticators try; no user at all → 401 from the permission
        token = auth.bearer(header)
        try:
            identity = aio.run(auth.authenticate_token(token))
        except auth.AuthError as exc:
            raise exceptions.AuthenticationFailed(exc.detail, code=exc.code) from exc
        return identity, token

    def authenticate_header(self, request):
        return 'Bearer realm="agent"'


class AgentJWTScheme(OpenApiAuthenticationExtension):
    target_class = "apps.agents.authentication.AgentJWTAuthentication"
    name = "agentJWT"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Access token from POST /api/v1/auth/login",
        }
