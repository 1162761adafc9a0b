"""Websocket: live events for the groups a page shows, with replay of what a client missed."""

import re
from collections import deque
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from convoys.events import BOARD_GROUP, event_as_message
from convoys.selectors import REPLAY_LIMIT, events_after

GROUP_RE = re.compile(r"^(board|(convoy|rig|repository)\.\d{1,18})$")
# A convoy page listens to the convoy and each of its legs' rigs.
MAX_GROUPS = 64
# Ids of the events sent lately: an event reaches every group it belongs to, and a page that
# listens to several of them (convoy.3 and rig.7) must get it once.
SENT_MEMORY = 512
# Replay reads the log a page at a time (a client back after a long absence gets it all).
REPLAY_PAGE = REPLAY_LIMIT


class EventConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/events/?groups=board,convoy.3&after=<last event id>`.

    Sends `{"type": "event", "event": {...}}` for each event (`"replayed": true` when it comes
    from the log), and `{"type": "ready"}` once the replay is done. Closes with 4401 for an
    anonymous user and 4400 when no group name is valid.
    """

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        requested = ",".join(query.get("groups", [BOARD_GROUP])).split(",")
        joined = list(dict.fromkeys(g for g in requested if GROUP_RE.match(g)))
        self.groups_joined = joined[:MAX_GROUPS]
        self.sent: deque[int] = deque(maxlen=SENT_MEMORY)
        if not self.groups_joined:
            await self.close(code=4400)
            return
        # Join before reading the log: an event committed meanwhile arrives live, is replayed,
        # or both (then it is sent once), but is never missed.
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
        """Send every stored event after `after`, a page of the log at a time."""
        while True:
            page = await database_sync_to_async(
                lambda after=after: [
                    event_as_message(e)
                    for e in events_after(after=after, groups=self.groups_joined, limit=REPLAY_PAGE)
                ]
            )()
            for event in page:
                await self.send_event(event, replayed=True)
            if len(page) < REPLAY_PAGE:
                return
            after = page[-1]["id"]

    async def send_event(self, event: dict, replayed: bool = False) -> None:
        if event["id"] in self.sent:
            return
        self.sent.append(event["id"])
        message = {"type": "event", "event": event}
        if replayed:
            message["replayed"] = True
        await self.send_json(message)

    async def event_message(self, message: dict) -> None:
        await self.send_event(message["event"])

    async def event_batch(self, message: dict) -> None:
        """A transaction's events for one group, in order (one channel-layer message)."""
        for event in message["events"]:
            await self.send_event(event)
