from django.urls import path

from apps.messages import api

# POST /api/v1/messages (ingest) is served from ASGI: apps.messages.asgi, mounted in wxcs/asgi.py.
api_urlpatterns = [
    path("replies", api.OutboxView.as_view(), name="reply-outbox"),
    path("replies/<int:reply_id>", api.ReplyDetailView.as_view(), name="reply-detail"),
    path("replies/<int:reply_id>/ack", api.ReplyAckView.as_view(), name="reply-ack"),
    path("stats", api.StatsView.as_view(), name="pipeline-stats"),
    path("conversations/takeover", api.TakeoverView.as_view(), name="conversation-takeover"),
]
