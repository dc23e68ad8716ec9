"""ASGI entry point for Daphne: HTTP through Django, WebSocket through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from wxcs.routing import websocket_urlpatterns  # noqa: E402

http_app = django_asgi_app
if settings.SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_app = ASGIStaticFilesHandler(django_asgi_app)

# An app may wrap the HTTP app (`apps/<app>/asgi.py`: `wrap_http(app) -> app`), e.g. the message
# ingest fast path that skips Django's middleware stack.
from apps.core.discovery import app_modules  # noqa: E402

for _module in app_modules("asgi"):
    http_app = _module.wrap_http(http_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": URLRouter(websocket_urlpatterns()),
    }
)
