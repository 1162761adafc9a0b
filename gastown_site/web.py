"""`python -m gastown_site.web [daphne's options] gastown_site.asgi:application`: daphne, with its
access log written through Python logging (logger `gastown.access`), so it has the format of
every other line (LOG_FORMAT) instead of daphne's own NCSA lines on stdout.

`make run` starts the web process this way; any daphne option works as with `daphne`.
"""

import logging
import os
import sys
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server

logger = logging.getLogger("gastown.access")

WEBSOCKET_ACTIONS = {
    "connecting": "WSCONNECTING",
    "connected": "WSCONNECT",
    "rejected": "WSREJECT",
    "disconnected": "WSDISCONNECT",
}


def access_log(protocol: str, action: str, details: dict[str, Any]) -> None:
    """daphne's action logger: one line per answered request and per websocket step."""
    client = details.get("client") or "-"
    path = details.get("path", "")
    if protocol == "http" and action == "complete":
        method, status, size = details.get("method", ""), details.get("status"), details.get("size")
        took = details.get("time_taken")
        duration_ms = round(took * 1000, 1) if isinstance(took, int | float) else None
        logger.info(
            '%s "%s %s" %s %s %sms',
            client,
            method,
            path,
            status,
            size,
            duration_ms,
            extra={
                "client": client,
                "method": method,
                "path": path,
                "status": status,
                "size": size,
                "duration_ms": duration_ms,
            },
        )
    elif protocol == "websocket" and action in WEBSOCKET_ACTIONS:
        verb = WEBSOCKET_ACTIONS[action]
        logger.info(
            '%s "%s %s"', client, verb, path, extra={"client": client, "method": verb, "path": path}
        )


class LoggingServer(Server):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["action_logger"] = access_log
        super().__init__(*args, **kwargs)


class WebCommandLine(CommandLineInterface):
    server_class = LoggingServer


def main() -> None:
    os.environ.setdefault("GASTOWN_ROLE", "web")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gastown_site.settings")
    WebCommandLine().run(sys.argv[1:])


if __name__ == "__main__":
    main()
