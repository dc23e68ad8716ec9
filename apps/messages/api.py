"""REST for agents and staff: the outbox (REST fallback of the push), one reply, acks, takeover, stats.
(Ingest, `POST /api/v1/messages`, is served from ASGI: apps.messages.asgi.)"""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents import auth
from apps.agents.api import IsAgent
from apps.agents.authentication import AgentJWTAuthentication
from apps.core import aio
from apps.core.api import ErrorSerializer
from apps.core.permissions import StaffPermission
from apps.messages import outbox, review, selectors
from apps.messages.models import Reply


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


class OutboxReplySerializer(serializers.Serializer):
    """The same object as a pushed `reply` frame."""

    type = serializers.CharField(default="reply")
    reply_id = serializers.IntegerField()
    message_id = serializers.IntegerField()
    chat = serializers.CharField()
    content = serializers.CharField()
    at = serializers.CharField(allow_null=True, help_text="the sender to @ in a group, else null")
    created_at = serializers.DateTimeField()


class AckSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=outbox.ACK_STATUSES)
    error = serializers.CharField(required=False, allow_blank=True, default="")


class AckResultSerializer(serializers.Serializer):
    reply_id = serializers.IntegerField()
    status = serializers.CharField()
    changed = serializers.BooleanField(help_text="false when the ack repeats an earlier one")


class AgentView(APIView):
    authentication_classes = [AgentJWTAuthentication]
    permission_classes = [IsAgent]


class OutboxView(AgentView):
    @extend_schema(
        tags=["messages"],
        summary="My unacked replies, oldest first (REST fallback of the push)",
        responses={200: OutboxReplySerializer(many=True), 401: ErrorSerializer},
    )
    def get(self, request):
        replies = aio.run(outbox.pending(request.user.agent_id))
        return Response([reply.frame() for reply in replies])


class ReplyDetailView(AgentView):
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


class ReplyAckView(AgentView):
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
        data = serializer.validated_data
        try:
            result = aio.run(outbox.ack(request.user.agent_id, reply_id, data["status"], data["error"]))
        except LookupError as exc:
            raise NotFound("no such reply") from exc
        return Response(result)


class TakeoverSerializer(serializers.Serializer):
    chat_name = serializers.CharField(max_length=200)
    active = serializers.BooleanField(default=True, help_text="true = a person took the chat over; false = hand back")
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class TakeoverResultSerializer(serializers.Serializer):
    chat = serializers.CharField()
    active = serializers.BooleanField()
    found = serializers.BooleanField(help_text="the conversation existed before")


class TakeoverView(AgentView):
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
        found = review.agent_takeover(request.user.agent_id, chat, active)
        return Response({"chat": chat, "active": active, "found": found})


VIEW_STATS = "wxmessages.view_stats"


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
    permission_classes = [IsAgent | StaffPermission(VIEW_STATS)]  # an agent sees its own numbers only

    @extend_schema(
        tags=["messages"],
        summary="Pipeline statistics per day",
        description="Staff (session) holding the permission `wxmessages.view_stats` see everything, or one agent "
        "with `?agent_id=`; an agent token sees its own numbers only. Real numbers from the database, days in the "
        "server time zone.",
        parameters=[
            OpenApiParameter("days", {"type": "integer", "minimum": 1, "maximum": 90, "default": 7}),
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
        return Response(selectors.stats(days, agent_id))
