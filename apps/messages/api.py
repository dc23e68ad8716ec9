"""REST: ingest (`POST /api/v1/messages`, an async view: no thread is held while `?wait` waits),
replies (read, ack, outbox for the REST fallback), stats.

The ingest view is a plain async Django view for speed; `IngestDoc` (a DRF APIView never routed)
carries its OpenAPI description, attached as `.cls` so drf-spectacular documents the real URL.
"""

import asyncio
import json
import logging

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents import auth
from apps.agents.api import ErrorSerializer, IsAgent
from apps.agents.authentication import AgentJWTAuthentication
from apps.core.db import run_db
from apps.messages import ingest, services
from apps.messages.models import Message, Reply

logger = logging.getLogger("wxcs.ingest")


# --- serializers (documentation + the slow paths) --------------------------------------------------
class InboundMessageSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=128, help_text="stable client message id (unique per agent)")
    chat_id = serializers.CharField(required=False, max_length=200)
    chat_name = serializers.CharField(required=False, max_length=200, help_text="chat_name or chat_id is required")
    chat_type = serializers.ChoiceField(choices=["private", "group"], default="private")
    sender = serializers.CharField(required=False, max_length=200)
    content = serializers.CharField(help_text="at most MESSAGE_MAX_CHARS characters (default 4000)")
    type = serializers.CharField(required=False, default="text", max_length=20)
    timestamp = serializers.CharField(required=False, help_text="epoch seconds / milliseconds or ISO 8601")
    is_at_me = serializers.BooleanField(required=False, default=False)


class IngestRequestSerializer(serializers.Serializer):
    message = InboundMessageSerializer()


class IngestAcceptedSerializer(serializers.Serializer):
    message_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["accepted", "duplicate"])
    client_id = serializers.CharField()
    duplicate = serializers.BooleanField()


class DecisionSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=["reply", "ignore", "transfer_human"], allow_null=True)
    content = serializers.CharField(allow_blank=True)
    confidence = serializers.FloatField(allow_null=True)
    message_id = serializers.IntegerField()
    reply_id = serializers.IntegerField(allow_null=True)
    status = serializers.CharField(help_text="reply status, or `processing` when the wait timed out")


class ReplySerializer(serializers.ModelSerializer):
    chat = serializers.CharField(source="conversation.chat_name")

    class Meta:
        model = Reply
        fields = [
            "id",
            "message_id",
            "chat",
            "action",
            "content",
            "at",
            "status",
            "confidence",
            "source",
            "engine",
            "model",
            "latency_ms",
            "created_at",
            "pushed_at",
            "acked_at",
        ]


class AckSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["delivered", "failed"])
    error = serializers.CharField(required=False, allow_blank=True, default="")


class AckResultSerializer(serializers.Serializer):
    reply_id = serializers.IntegerField()
    status = serializers.CharField()
    changed = serializers.BooleanField(help_text="false when the ack repeats an earlier one")


# --- ingest ----------------------------------------------------------------------------------------
def _error(status: int, detail, code: str, **extra) -> JsonResponse:
    response = JsonResponse(
        {"detail": detail, "code": code, **extra}, status=status, json_dumps_params={"ensure_ascii": False}
    )
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="agent"'
    return response


def _load_decision(message_id: int) -> dict:
    return services.decision(Reply.objects.filter(message_id=message_id).first(), message_id)


async def _wait_for_decision(message_id: int, seconds: float) -> dict:
    """Subscribe first, then look, then wait: no thread is held while waiting."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    group = services.message_group(message_id)
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    try:
        decided = await run_db(_load_decision, message_id)
        if decided["reply_id"] is None:
            try:
                await asyncio.wait_for(layer.receive(channel), timeout=seconds)
            except TimeoutError:
                pass
            decided = await run_db(_load_decision, message_id)
        return decided
    finally:
        await layer.group_discard(group, channel)


async def store_messages(agent_id: str, items: list, fast: bool) -> list:
    """`fast`: the caller runs on a long-lived event loop (Daphne) — use the thread-free path."""
    from apps.messages import aingest

    if fast and aingest.available():
        return await aingest.ingest(agent_id, items)
    return await run_db(ingest.ingest, agent_id, items)


async def handle_ingest(
    authorization: str, body: bytes, content_length: str | None, wait_param: str | None, fast: bool = False
) -> tuple[int, dict, dict]:
    """The whole ingest request, framework-free: (status, payload, extra headers). Used by the Django
    view below and by the ASGI fast path (apps.messages.asgi) that skips Django's middleware stack."""
    try:
        identity = await auth.aauthenticate_token(auth.bearer(authorization))
    except auth.AuthError as exc:
        return 401, {"detail": exc.detail, "code": exc.code}, {"WWW-Authenticate": 'Bearer realm="agent"'}
    max_bytes = settings.INGEST_MAX_BODY_BYTES
    if (content_length and content_length.isdigit() and int(content_length) > max_bytes) or len(body) > max_bytes:
        return 413, {"detail": f"request body larger than {max_bytes} bytes", "code": "too_large"}, {}
    try:
        data = json.loads(body or b"")
    except ValueError:
        return 400, {"detail": "malformed JSON", "code": "malformed"}, {}
    if not isinstance(data, dict):
        return 400, {"detail": {"non_field_errors": ["Expected a JSON object."]}, "code": "invalid"}, {}
    item = data.get("message", data if "content" in data else None)
    if item is None:
        return 400, {"detail": {"message": ["This field is required."]}, "code": "invalid"}, {}
    clean = ingest.validate(item)
    if clean.errors:
        too_long = "content" in clean.errors and "no more than" in clean.errors["content"][0]
        return 400, {"detail": {"message": clean.errors}, "code": "content_too_long" if too_long else "invalid"}, {}
    wait = 0.0
    if wait_param is not None:
        try:
            wait = float(wait_param)
            if not 0 <= wait <= settings.INGEST_MAX_WAIT:
                raise ValueError
        except ValueError:
            return (
                400,
                {"detail": {"wait": [f"between 0 and {settings.INGEST_MAX_WAIT} seconds"]}, "code": "invalid"},
                {},
            )
    try:
        accepted = (await store_messages(identity.agent_id, [clean], fast))[0]
    except ingest.IngestError as exc:
        return (
            exc.status,
            {"detail": exc.detail, "code": exc.code},
            ({"Retry-After": str(exc.retry_after)} if exc.retry_after else {}),
        )
    if wait:
        decided = await _wait_for_decision(accepted.message_id, wait)
        if decided["reply_id"] is not None:
            return 200, decided, {}
        return 202, {**accepted.as_dict(), **decided, "status": "processing"}, {}
    return 202, accepted.as_dict(), {}


@csrf_exempt
async def ingest_view(request):
    if request.method != "POST":
        return _error(405, f'Method "{request.method}" not allowed.', "method_not_allowed")
    status, payload, headers = await handle_ingest(
        request.headers.get("Authorization", ""),
        request.body,
        request.headers.get("Content-Length"),
        request.GET.get("wait"),
    )
    response = JsonResponse(payload, status=status, json_dumps_params={"ensure_ascii": False})
    for name, value in headers.items():
        response[name] = value
    return response


class IngestDoc(APIView):
    """Documentation twin of `ingest_view` (never routed itself)."""

    authentication_classes = [AgentJWTAuthentication]

    @extend_schema(
        tags=["messages"],
        summary="Ingest a customer message",
        request=IngestRequestSerializer,
        description=(
            "Stores the message (idempotent per agent + `message.id`: a repeat answers the same `message_id` "
            "with `status: duplicate`) and enqueues its decision. `?wait=N` (0–30 s) waits for the decision "
            "without holding a server thread and answers `{action, content, confidence, message_id, reply_id}`; "
            "on timeout 202 with `status: processing`. Limits: content ≤ MESSAGE_MAX_CHARS (400 "
            "`content_too_long`), body ≤ INGEST_MAX_BODY_BYTES (413), INGEST_RATE_LIMIT messages per "
            "INGEST_RATE_WINDOW per agent (429 with Retry-After)."
        ),
        parameters=[OpenApiParameter("wait", float, description="seconds to wait for the decision (≤ 30)")],
        examples=[
            OpenApiExample(
                "private chat",
                request_only=True,
                value={
                    "message": {
                        "id": "wx-123",
                        "chat_name": "张三",
                        "chat_type": "private",
                        "sender": "张三",
                        "content": "充电桩一直显示故障怎么办？",
                        "type": "text",
                        "timestamp": 1764000000,
                        "is_at_me": False,
                    }
                },
            )
        ],
        responses={
            202: IngestAcceptedSerializer,
            200: OpenApiResponse(DecisionSerializer, description="?wait"),
            400: ErrorSerializer,
            401: ErrorSerializer,
            413: ErrorSerializer,
            429: OpenApiResponse(ErrorSerializer, description="throttled; see Retry-After"),
        },
    )
    def post(self, request):  # pragma: no cover - documentation only
        raise NotImplementedError


ingest_view.cls = IngestDoc
ingest_view.initkwargs = {}


# --- replies -------------------------------------------------------------------------------------
class ReplyDetailView(APIView):
    authentication_classes = [AgentJWTAuthentication]
    permission_classes = [IsAgent]

    @extend_schema(
        tags=["messages"],
        summary="Read one of my replies",
        description="404 for unknown ids and for other agents' replies.",
        responses={200: ReplySerializer, 401: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request, reply_id: int):
        reply = Reply.objects.select_related("conversation").filter(pk=reply_id, agent_id=request.user.agent_id).first()
        if reply is None:
            raise NotFound("no such reply")
        return Response(ReplySerializer(reply).data)


class ReplyAckView(APIView):
    authentication_classes = [AgentJWTAuthentication]
    permission_classes = [IsAgent]

    @extend_schema(
        tags=["messages"],
        summary="Acknowledge a reply (REST fallback of the `ack` frame)",
        description="Only the owning agent; only queued/sent → delivered/failed. A repeat is a no-op "
        "(`changed: false`).",
        request=AckSerializer,
        responses={200: AckResultSerializer, 400: ErrorSerializer, 401: ErrorSerializer, 404: ErrorSerializer},
    )
    def post(self, request, reply_id: int):
        serializer = AckSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            result = services.ack(
                request.user.agent_id, reply_id, serializer.validated_data["status"], serializer.validated_data["error"]
            )
        except LookupError as exc:
            raise NotFound("no such reply") from exc
        except services.AckError as exc:
            raise ValidationError({"status": [str(exc)]}) from exc
        return Response(result)


class TakeoverSerializer(serializers.Serializer):
    chat_name = serializers.CharField(max_length=200)
    active = serializers.BooleanField(default=True, help_text="true = a person took the chat over; false = hand back")
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class TakeoverResultSerializer(serializers.Serializer):
    chat = serializers.CharField()
    active = serializers.BooleanField()
    found = serializers.BooleanField(help_text="the conversation existed before")


class TakeoverView(APIView):
    authentication_classes = [AgentJWTAuthentication]
    permission_classes = [IsAgent]

    @extend_schema(
        tags=["messages"],
        summary="A person typed in WeChat: pause the bot for this chat (REST twin of the `takeover` frame)",
        request=TakeoverSerializer,
        responses={200: TakeoverResultSerializer, 400: ErrorSerializer, 401: ErrorSerializer},
    )
    def post(self, request):
        serializer = TakeoverSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        chat, active = serializer.validated_data["chat_name"], serializer.validated_data["active"]
        found = services.agent_takeover(request.user.agent_id, chat, active)
        return Response({"chat": chat, "active": active, "found": found})


class OutboxView(APIView):
    authentication_classes = [AgentJWTAuthentication]
    permission_classes = [IsAgent]

    @extend_schema(
        tags=["messages"],
        summary="My unacked replies, oldest first (REST fallback of the push)",
        responses={200: ReplySerializer(many=True), 401: ErrorSerializer},
    )
    def get(self, request):
        replies = (
            Reply.objects.select_related("conversation")
            .filter(agent_id=request.user.agent_id, status__in=Reply.OUTBOX)
            .order_by("id")[:500]
        )
        return Response(ReplySerializer(replies, many=True).data)


# --- stats ---------------------------------------------------------------------------------------
class IsStaffOrAgent(BasePermission):
    def has_permission(self, request, view):
        user = request.user
        return isinstance(user, auth.AgentIdentity) or bool(user and getattr(user, "is_staff", False))


class StatsDaySerializer(serializers.Serializer):
    date = serializers.DateField()
    messages = serializers.IntegerField()
    replies = serializers.IntegerField(help_text="replies sent or to be sent (not pending, not rejected)")
    handoffs = serializers.IntegerField(help_text="transfer to human, pending review or taken over")
    ignored = serializers.IntegerField()
    pending_review = serializers.IntegerField()
    delivered = serializers.IntegerField()
    avg_latency_ms = serializers.FloatField(allow_null=True, help_text="message received → reply decided")
    p95_latency_ms = serializers.FloatField(allow_null=True)
    cost = serializers.FloatField(help_text="CNY")


class StatsSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    agent_id = serializers.CharField(allow_null=True)
    per_day = StatsDaySerializer(many=True)
    totals = serializers.DictField()


class StatsView(APIView):
    authentication_classes = [AgentJWTAuthentication, *APIView.authentication_classes]
    permission_classes = [IsStaffOrAgent]

    @extend_schema(
        tags=["messages"],
        summary="Pipeline statistics per day",
        description="Staff (session) see everything, or one agent with `?agent_id=`; an agent token sees its own "
        "numbers only. Real numbers from the database, days in the server time zone.",
        parameters=[
            OpenApiParameter("days", int, description="1–90, default 7"),
            OpenApiParameter("agent_id", str, description="staff only: one agent"),
        ],
        responses={200: StatsSerializer, 400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer},
    )
    def get(self, request):
        try:
            days = int(request.query_params.get("days", 7))
            if not 1 <= days <= 90:
                raise ValueError
        except ValueError as exc:
            raise ValidationError({"days": ["an integer between 1 and 90"]}) from exc
        if isinstance(request.user, auth.AgentIdentity):
            agent_id = request.user.agent_id
        else:
            agent_id = request.query_params.get("agent_id") or None
        return Response(services.stats(days, agent_id))


__all__ = ["ingest_view", "Message"]
