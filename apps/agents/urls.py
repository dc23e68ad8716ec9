from django.urls import path

from apps.agents import api

api_urlpatterns = [
    path("auth/login", api.LoginView.as_view(), name="agent-login"),
    path("auth/refresh", api.RefreshView.as_view(), name="agent-refresh"),
    path("heartbeat", api.HeartbeatView.as_view(), name="agent-heartbeat"),
]
