"""Telling a run that failed at start (no key, no login, no network, no binary) from one that
worked and then failed, from its output alone. The supervisor feeds it every line.

Restarting a run that failed at start only fails again: such a run is not restarted but
escalated once, with the CLI's own error. What counts:

- a known error of the CLIs before any progress: Claude Code's stream-json result with
  `is_error` (it exits 1, older versions 0, with "Not logged in · Please run /login" or
  "Invalid API key"), its synthetic assistant error (`authentication_failed`...), and texts such
  as `401 Unauthorized`, `Incorrect API key`, and Codex's `Reconnecting... waiting for network`
  (it has used up its retries and waits for ever: the supervisor stops it);
- for the CLIs' runs (Claude Code, Codex), an exit with another code than 0 within
  GASTOWN_RUN_START_SECONDS and before any progress (a command that is not found, a flag the
  installed version refuses...).

Progress is usage reported (tokens or dollars), or a turn of a real model in Claude Code's
stream (an assistant message not marked `<synthetic>`). After progress the usual rules apply.

And at any time, the same error line over and over with no progress between (`REPEATED_ERRORS`
times, numbers aside, over at least `REPEATED_SPAN_SECONDS`: a retry loop, not a test run that
prints a hundred failures at once) means the run is stuck: the supervisor stops it, and it is
restarted like a failure.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable

# Texts the CLIs print when they cannot work at all (case-insensitive).
FATAL_TEXTS = re.compile(
    r"not logged in|please run /login|invalid api key|incorrect api key|invalid_api_key|"
    r"authentication_failed|\b401 unauthorized|missing bearer|"
    r"reconnecting\.\.\. waiting for network|"
    r"(?:anthropic|openai)_api_key (?:is )?(?:not set|missing)",
    re.IGNORECASE,
)
REPEATED_ERRORS = 30
REPEATED_SPAN_SECONDS = 60.0
TAIL_LINES = 12
LINE_CHARS = 400
_NUMBERS = re.compile(r"\d+")
_ERRORISH = re.compile(r"error|fail|refused|unreachable|timed? ?out", re.IGNORECASE)


def _json(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
    return ""


def _json_gist(data: dict) -> str:
    """A stream-json line as a person reads it in a notice: its kind and what went wrong (the
    whole line, with its usage figures and tool lists, runs to kilobytes)."""
    gist = {k: data[k] for k in ("type", "subtype", "is_error", "result", "error") if k in data}
    message = data.get("message")
    if isinstance(message, dict) and (text := _message_text(message)):
        gist["text"] = text
    return json.dumps(gist, ensure_ascii=False, separators=(",", ":")) if gist else str(data)


class StartWatch:
    """Reads a run's output, line by line; says when it failed at start or is stuck."""

    def __init__(
        self, *, start_seconds: float, cli: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.start_seconds = start_seconds
        self.cli = cli  # the time rule is for the CLIs, whose progress can be read
        self.progressed = False
        self.error = ""  # the CLI's own error, when it said one before any progress
        self.stuck = ""
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.clock = clock
        self._repeats: dict[str, tuple[int, float]] = {}  # error line -> (times, first seen)

    def usage_seen(self) -> None:
        self.progressed = True
        self._repeats.clear()

    def line(self, raw: str) -> str:
        """Read one line. Returns the error when it shows the run failed at start ('' if not)."""
        text = raw.strip()
        if not text:
            return ""
        data = _json(text)
        shown = _json_gist(data) if data is not None else text
        self.tail.append(shown if len(shown) <= LINE_CHARS else shown[: LINE_CHARS - 1] + "…")
        if data is not None:
            return self._json_line(data)
        if not self.progressed and not self.error and FATAL_TEXTS.search(text):
            self.error = text[:LINE_CHARS]
            return self.error
        if _ERRORISH.search(text) and not self.stuck:
            key, now = _NUMBERS.sub("N", text)[:200], self.clock()
            times, first = self._repeats.get(key, (0, now))
            self._repeats[key] = (times + 1, first)
            if times + 1 >= REPEATED_ERRORS and now - first >= REPEATED_SPAN_SECONDS:
                self.stuck = f"the same error {times + 1} times with no progress: {text}"
                self.stuck = self.stuck[:LINE_CHARS]
        return ""

    def _json_line(self, data: dict) -> str:
        kind = data.get("type")
        message = data.get("message") if isinstance(data.get("message"), dict) else {}
        if kind == "assistant" and message.get("model") not in (None, "<synthetic>"):
            self.usage_seen()
            return ""
        if self.progressed or self.error:
            return ""
        if kind == "assistant" and data.get("error"):
            self.error = _message_text(message) or str(data["error"])
        elif kind == "result" and data.get("is_error"):
            self.error = str(data.get("result") or data.get("subtype") or "error")[:LINE_CHARS]
        return self.error

    def failed_at_start(self, exit_code: int | None, seconds: float) -> str:
        """At the end: why the run failed at start ('' when it did not)."""
        if self.progressed:
            return ""
        if self.error:
            return self.error
        quick = self.cli and self.start_seconds > 0 and seconds < self.start_seconds
        if quick and exit_code not in (0, None) and not self.stuck:
            last = self.tail[-1] if self.tail else "no output"
            return f"{last}"
        return ""

    def log_tail(self) -> list[str]:
        """The last lines of output (Gas Town's own lines left out), shortened."""
        return [line for line in self.tail if not line.startswith("# gastown:")]
