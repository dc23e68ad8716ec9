from django.urls import path

from apps.monitoring import views

urlpatterns = [
    path("metrics", views.metrics, name="prometheus-metrics"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/snapshot", views.snapshot, name="dashboard-snapshot"),
    path("dashboard/traces/<str:trace_id>/", views.trace, name="dashboard-trace"),
    path(
        "dashboard/conversations/<int:conversation_id>/trace/",
        views.conversation_trace,
        name="dashboard-conversation-trace",
    ),
]
