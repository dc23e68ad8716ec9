"""/ws/dashboard/: staff with `monitoring.view_dashboard`, checked on connect and again before every snapshot
sent (the session, the user, its staff flag and permissions read afresh: a logout or a revoked right stops
the feed at the next frame)."""

from channels.generic.websocket import AsyncWebsocketConsumer

from apps.core.db import run_db
from apps.core.permissions import session_allows
from apps.monitoring.models import VIEW_DASHBOARD
from apps.monitoring.producer import GROUP, cached_snapshot_text, producer

CLOSE_FORBIDDEN = 4403


class DashboardConsumer(AsyncWebsocketConsumer):
    joined = False

    async def connect(self):
        await self.accept()
        if not await self.allowed():
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self.joined = True
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
        if not await self.allowed():
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.send(text_data=event["text"])

    async def allowed(self) -> bool:
        session = self.scope.get("session")
        return await run_db(session_allows, session.session_key if session is not None else None, VIEW_DASHBOARD)
