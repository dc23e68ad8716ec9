from django.urls import path

from apps.messages import api

api_urlpatterns = [
    path("messages", api.ingest_view, name="message-ingest"),
    path("replies", api.OutboxView.as_view(), name="reply-outbox"),
    path("replies/<int:reply_id>", api.ReplyDetailView.as_view(), name="reply-detail"),
    path("replies/<int:reply_id>/ack", api.ReplyAckView.as_view(), name="reply-ack"),
    path("stats", api.StatsView.as_view(), name="pipeline-stats"),
    path("conversations/takeover", api.TakeoverView.as_view(), name="conversation-takeover"),
]
