"""ASGI entry point for Daphne: `POST /api/v1/messages` straight to ingest, hopeless agent logins refused before
Django (apps.agents.asgi), other HTTP through Django, WebSocket through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from apps.agents.asgi import with_login_gate  # noqa: E402
from apps.messages.asgi import with_ingest_endpoint  # noqa: E402
from wxcs.routing import websocket_urlpatterns  # noqa: E402

http_app = django_asgi_app
if settings.SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_app = ASGIStaticFilesHandler(django_asgi_app)

application = ProtocolTypeRouter(
    {
        "http": with_login_gate(with_ingest_endpoint(http_app)),
        "websocket": URLRouter(websocket_urlpatterns()),
    }
)
