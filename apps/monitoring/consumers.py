"""/ws/dashboard/: staff only (session checked on connect and again every DASHBOARD_RECHECK seconds)."""

import time
from importlib import import_module

from channels.auth import get_user
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from apps.monitoring.producer import GROUP, cached_snapshot_text, producer

CLOSE_FORBIDDEN = 4403


class DashboardConsumer(AsyncWebsocketConsumer):
    joined = False

    async def connect(self):
        await self.accept()
        if not await self.is_staff():
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self.joined = True
        self.checked_at = time.monotonic()
        producer.viewer_joined()
        text = await cached_snapshot_text()
        if text:
            await self.send(text_data=text)

    async def disconnect(self, code):
        if self.joined:
            self.joined = False
            producer.viewer_left()
            await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """Viewers only listen; anything they send is ignored."""

    async def dashboard_snapshot(self, event):
        if time.monotonic() - self.checked_at > settings.DASHBOARD_RECHECK:
            self.checked_at = time.monotonic()
            if not await self.is_staff():
                await self.close(code=CLOSE_FORBIDDEN)
                return
        await self.send(text_data=event["text"])

    async def is_staff(self) -> bool:
        """Re-reads the session and the user from their stores (a logout or a revoked staff flag takes effect)."""
        session = self.scope.get("session")
        if session is None or not session.session_key:
            return False
        fresh = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session.session_key)
        user = await get_user({"session": fresh})
        return bool(user.is_authenticated and user.is_active and user.is_staff)
