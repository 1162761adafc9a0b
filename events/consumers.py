"""Websocket: live events for the groups a page shows, with replay of what a client missed."""

import json
import re
from collections import deque
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from common.metrics import WEBSOCKET_CLIENTS
from common.params import id_or_none
from events import access
from events.selectors import REPLAY_LIMIT, events_after
from events.services import BOARD_GROUP, event_as_message

GROUP_RE = re.compile(r"^(board|(convoy|rig|repository)\.\d{1,18})$")
# A convoy page listens to the convoy and each of its legs' rigs.
MAX_GROUPS = 64
# Ids of the events sent lately: an event reaches every group it belongs to, and a page that
# listens to several of them (convoy.3 and rig.7) must get it once.
SENT_MEMORY = 512
# Replay reads the log a page at a time (a client back after a long absence gets it all).
REPLAY_PAGE = REPLAY_LIMIT
# A client frame is a small JSON object; anything bigger is refused without parsing.
MAX_FRAME_BYTES = 4096


class EventConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/events/?groups=board,convoy.3&after=<last event id>`.

    Sends `{"type": "event", "event": {...}}` for each event (`"replayed": true` when it comes
    from the log), and `{"type": "ready"}` once the replay is done. Closes with 4401 for an
    anonymous user, 4403 for a login without a role (or an agent asking for none of its own
    groups) and 4400 when no group name is valid. A frame it cannot read gets
    `{"type": "error", "error": {...}}` and the connection stays open.
    """

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=4401)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        requested = ",".join(query.get("groups", [BOARD_GROUP])).split(",")
        valid = list(dict.fromkeys(g for g in requested if GROUP_RE.match(g)))[:MAX_GROUPS]
        if not valid:
            await self.close(code=4400)
            return
        allowed = await database_sync_to_async(access.groups_allowed)(self.user, valid)
        if not allowed:
            await self.close(code=4403)
            return
        self.groups_joined = allowed
        self.sent: deque[int] = deque(maxlen=SENT_MEMORY)
        # Join before reading the log: an event committed meanwhile arrives live, is replayed,
        # or both (then it is sent once), but is never missed.
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        WEBSOCKET_CLIENTS.inc()
        self.counted = True
        raw_after = query.get("after", [""])[0].strip()
        after = 0 if raw_after == "0" else id_or_none(raw_after)
        if after is not None:
            await self.replay(after)
        await self.send_json({"type": "ready", "groups": self.groups_joined})

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            WEBSOCKET_CLIENTS.dec()
            self.counted = False
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if text_data is None or len(text_data) > MAX_FRAME_BYTES:
            await self.send_error("frame", "send a small JSON text frame (binary is not read).")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self.send_error("frame", "the frame is not JSON.")
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs) -> None:
        # A client may ask for a replay at any time: {"type": "replay", "after": <id>}.
        if not isinstance(content, dict) or content.get("type") != "replay":
            await self.send_error("type", 'the only request is {"type": "replay", "after": <id>}.')
            return
        after = id_or_none(content.get("after"))
        if after is None and content.get("after") not in (0, "0"):
            await self.send_error("after", "'after' must be an event id (a positive integer).")
            return
        await self.replay(after or 0)

    async def send_error(self, field: str, message: str) -> None:
        await self.send_json(
            {"type": "error", "error": {"code": "invalid", "message": message, "field": field}}
        )

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
        # (no database here: groups_allowed, at connect, cached what the policy reads)
        shown = access.event_for(self.user, event)
        if shown is None:
            return
        message = {"type": "event", "event": shown}
        if replayed:
            message["replayed"] = True
        await self.send_json(message)

    async def event_message(self, message: dict) -> None:
        await self.send_event(message["event"])

    async def event_batch(self, message: dict) -> None:
        """A transaction's events for one group, in order (one channel-layer message)."""
        for event in message["events"]:
            await self.send_event(event)
