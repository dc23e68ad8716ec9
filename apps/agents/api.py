"""Agent REST endpoints: login, refresh, heartbeat."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents import auth, heartbeat, services
from apps.agents.authentication import AgentJWTAuthentication
from apps.core import ratelimit
from apps.core.api import ErrorSerializer
from apps.core.inputs import TooLarge


class IsAgent(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, auth.AgentIdentity)


class LoginSerializer(serializers.Serializer):
    agent_id = serializers.CharField(max_length=64)
    api_key = serializers.CharField(max_length=256, trim_whitespace=False)


class RefreshSerializer(serializers.Serializer):
    refresh_token = serializers.CharField(max_length=4096)


class TokenSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    token_type = serializers.CharField(default="Bearer")
    expires_in = serializers.IntegerField(help_text="access token lifetime in seconds")


def _auth_error(exc: auth.AuthError) -> Response:
    return Response(
        {"detail": exc.detail, "code": exc.code},
        status=status.HTTP_401_UNAUTHORIZED,
        headers={"WWW-Authenticate": 'Bearer realm="agent"'},
    )


def _throttled(exc: auth.Throttled) -> Response:
    return Response(
        {"detail": exc.detail, "code": exc.code},
        status=status.HTTP_429_TOO_MANY_REQUESTS,
        headers={"Retry-After": str(exc.retry_after)},
    )


THROTTLED = OpenApiResponse(ErrorSerializer, description="too many attempts (`Retry-After` seconds)")


class LoginView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["agents"],
        summary="Agent login",
        request=LoginSerializer,
        description="Exchange the agent id and API key (from `manage.py create_agent`) for an access token "
        "(HS256 JWT, `expires_in` seconds) and a refresh token (a new token family). Throttled per agent id and "
        "per client address: 429 with `Retry-After`.",
        responses={200: TokenSerializer, 400: ErrorSerializer, 401: ErrorSerializer, 429: THROTTLED},
    )
    def post(self, request):
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            tokens = auth.login(data["agent_id"], data["api_key"], ratelimit.client_address(request))
        except auth.AuthError as exc:
            return _auth_error(exc)
        except auth.Throttled as exc:
            return _throttled(exc)
        return Response(tokens)


class RefreshView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["agents"],
        summary="Refresh tokens",
        request=RefreshSerializer,
        description="The current refresh token of a family gives a new access + refresh pair and is spent: "
        "keep the new refresh token. A spent one is refused (`token_reused`) and revokes its family. Throttled "
        "per client address: 429 with `Retry-After`.",
        responses={200: TokenSerializer, 400: ErrorSerializer, 401: ErrorSerializer, 429: THROTTLED},
    )
    def post(self, request):
        retry_after = ratelimit.hit([auth.refresh_limit(ratelimit.client_address(request))])
        if retry_after:
            return _throttled(auth.Throttled(retry_after, "too many refresh attempts"))
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            tokens = auth.refresh(serializer.validated_data["refresh_token"])
        except auth.AuthError as exc:
            return _auth_error(exc)
        return Response(tokens)


class HeartbeatView(APIView):
    authentication_classes = [AgentJWTAuthentication]
    permission_classes = [IsAgent]

    @extend_schema(
        tags=["agents"],
        summary="Agent heartbeat",
        request={"application/json": heartbeat.openapi_schema()},
        description="Latest agent state (resources, WeChat status, offline queue). An agent silent for three "
        "heartbeat intervals is shown offline. Every field is bounded; unknown fields are dropped; the whole is at "
        "most HEARTBEAT_MAX_BYTES (413 `too_large`). Field errors: 400 `{detail: {field: [..]}, code: invalid}`.",
        responses={
            200: inline_serializer(
                "HeartbeatAck",
                {
                    "presence": serializers.CharField(),
                    "server_time": serializers.DateTimeField(),
                    "interval": serializers.IntegerField(),
                },
            ),
            400: ErrorSerializer,
            401: OpenApiResponse(ErrorSerializer, description="bad or missing token"),
            413: ErrorSerializer,
        },
    )
    def post(self, request):
        try:
            return Response(services.record_heartbeat(request.user.agent_id, request.data))
        except heartbeat.Invalid as exc:
            return Response({"detail": exc.errors, "code": "invalid"}, status=status.HTTP_400_BAD_REQUEST)
        except TooLarge as exc:
            return Response({"detail": str(exc), "code": exc.code}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
