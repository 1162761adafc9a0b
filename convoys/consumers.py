"""Websocket: live events for the groups a page shows, with replay of what a client missed."""

import re
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from convoys.events import BOARD_GROUP, event_as_message
from convoys.selectors import events_after

GROUP_RE = re.compile(r"^(board|(convoy|rig|repository)\.\d{1,18})$")
MAX_GROUPS = 20


class EventConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/events/?groups=board,convoy.3&after=<last event id>`."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        requested = ",".join(query.get("groups", [BOARD_GROUP])).split(",")
        self.groups_joined = [g for g in requested if GROUP_RE.match(g)][:MAX_GROUPS]
        if not self.groups_joined:
            await self.close(code=4400)
            return
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        after = query.get("after", [""])[0]
        if after.isdigit():
            await self.replay(int(after))
        await self.send_json({"type": "ready", "groups": self.groups_joined})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: dict, **kwargs) -> None:
        # A client may ask for a replay at any time: {"type": "replay", "after": <id>}.
        if content.get("type") == "replay" and str(content.get("after", "")).isdigit():
            await self.replay(int(content["after"]))

    async def replay(self, after: int) -> None:
        events = await database_sync_to_async(
            lambda: [
                event_as_message(e) for e in events_after(after=after, groups=self.groups_joined)
            ]
        )()
        for event in events:
            await self.send_json({"type": "event", "event": event, "replayed": True})

    async def event_message(self, message: dict) -> None:
        await self.send_json({"type": "event", "event": message["event"]})
