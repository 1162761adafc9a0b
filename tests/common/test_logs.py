"""Log lines: the JSON format, the request and task context, process roles, `make run`'s
prefixes, and quiet periodic ticks."""

import io
import json
import logging
import sys
import time

import pytest
from django.test import Client

from common.logs import JsonFormatter, QuietTicksFilter, log_context, process_role
from gastown_site import run
from rigs import tasks as rig_tasks


class Lines(logging.Handler):
    """Collects formatted lines (settings.LOGGING puts the quiet-ticks filter on Celery's)."""

    def __init__(self, formatter: logging.Formatter | None = None) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self.setFormatter(formatter or JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def json(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO)
    handler = Lines()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


def test_a_json_line_has_time_level_logger_message_role_host_and_extras(monkeypatch):
    monkeypatch.setenv("GASTOWN_ROLE", "worker")
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("rigs.merge_queue").makeRecord(
            "rigs.merge_queue",
            logging.WARNING,
            __file__,
            1,
            "gate of %s failed",
            ("rig/a",),
            sys.exc_info(),
            extra={"merge_request": 7},
        )
    line = formatter.format(record)
    assert "\n" not in line  # one object per line, the traceback inside it
    data = json.loads(line)
    assert data["level"] == "WARNING"
    assert data["logger"] == "rigs.merge_queue"
    assert data["message"] == "gate of rig/a failed"
    assert data["role"] == "worker"
    assert data["host"]
    assert data["time"].endswith("+00:00") and "T" in data["time"]
    assert data["merge_request"] == 7
    assert "ValueError: boom" in data["exception"]


def test_a_requests_log_line_carries_its_request_id_and_rig(lines, db):
    response = Client().get("/api/v1/rigs/424242/")
    assert response.status_code in (401, 403)
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    logged = [line for line in lines.json() if line["logger"] == "django.request"]
    assert logged, lines.lines
    assert logged[-1]["request_id"] == request_id
    assert logged[-1]["rig"] == 424242
    assert logged[-1]["message"].endswith("/api/v1/rigs/424242/")
    # the request is over: what is logged next is about nothing
    assert dict(log_context()) == {}


def test_a_proxys_request_id_is_kept_and_a_strange_one_replaced(lines, db):
    sent = Client().get("/no-such-page/", headers={"X-Request-ID": "proxy-abc-123456"})
    assert sent["X-Request-ID"] == "proxy-abc-123456"
    assert lines.json()[-1]["request_id"] == "proxy-abc-123456"
    strange = Client().get("/no-such-page/", headers={"X-Request-ID": "x\ny"})
    assert strange["X-Request-ID"] != "x\ny" and len(strange["X-Request-ID"]) == 32


@pytest.mark.parametrize(
    ("argv", "environ", "role"),
    [
        (["/venv/lib/python3.11/site-packages/daphne/__main__.py", "app"], {}, "web"),
        (["/srv/gastown/gastown_site/web.py", "-p", "8000"], {}, "web"),
        (["/venv/bin/celery", "-A", "gastown_site", "worker"], {}, "worker"),
        (
            ["/venv/lib/python3.11/site-packages/celery/__main__.py", "-A", "g", "beat"],
            {},
            "scheduler",
        ),
        (["/srv/gastown/runner/supervisor.py", "12"], {}, "supervisor"),
        (["manage.py", "migrate"], {}, "manage"),
        (["/venv/bin/celery", "worker"], {"GASTOWN_ROLE": "scheduler"}, "scheduler"),
    ],
)
def test_the_process_role_comes_from_the_environment_or_the_command_line(argv, environ, role):
    assert process_role(argv, environ) == role


def test_make_run_prefixes_each_line_of_a_child_with_its_role():
    out = io.BytesIO()
    run.lines_copy(io.BytesIO(b"first\nsecond\n"), out, run.role_prefix("web"))
    assert out.getvalue() == b"web    | first\nweb    | second\n"


def test_make_run_tells_each_child_its_role(monkeypatch):
    out = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdout", out)
    command = [sys.executable, "-c", "import os; print(os.environ['GASTOWN_ROLE']); print('ok')"]
    child = run.child_start("worker", command, prefixed=True)
    assert child.wait(30) == 0
    deadline = time.monotonic() + 10
    while out.buffer.getvalue().count(b"\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.buffer.getvalue() == b"worker | worker\nworker | ok\n"


# --- quiet ticks ----------------------------------------------------------------------------------


def task_lines(handler: Lines, name: str) -> list[logging.LogRecord]:
    return [r for r in handler.records if name in r.getMessage()]


def test_a_quiet_tick_logs_nothing_at_info(lines, db):
    assert rig_tasks.rigs_mark_stalled.apply().get() == 0
    assert task_lines(lines, "rigs_mark_stalled") == []


def test_a_tick_that_did_something_says_so_at_info(lines, db, monkeypatch):
    from rigs import services

    monkeypatch.setattr(services, "rigs_mark_stalled", lambda: ["a rig"])
    assert rig_tasks.rigs_mark_stalled.apply().get() == 1
    [line] = task_lines(lines, "rigs_mark_stalled")
    assert line.levelname == "INFO" and "succeeded" in line.getMessage()
    assert json.loads(lines.lines[-1])["task"] == "rigs.tasks.rigs_mark_stalled"


def test_a_quiet_tick_still_logs_at_debug(lines, db, caplog):
    caplog.set_level(logging.DEBUG, logger="celery.app.trace")
    rig_tasks.rigs_mark_stalled.apply().get()
    [line] = task_lines(lines, "rigs_mark_stalled")
    assert line.levelname == "DEBUG"


def test_a_task_that_is_not_a_tick_logs_as_usual(lines, db):
    rig_tasks.rig_sync.apply(args=(987654,))  # no such rig: it fails, and says so
    assert any(r.levelno >= logging.ERROR for r in task_lines(lines, "rig_sync"))


def test_beats_sending_of_a_tick_is_debug_and_of_anything_else_info():
    quiet = QuietTicksFilter()
    sent = logging.LogRecord(
        "celery.beat",
        logging.INFO,
        __file__,
        1,
        "Scheduler: Sending due task %s (%s)",
        ("supervise-agent-runs", "runner.tasks.agent_runs_supervise"),
        None,
    )
    assert quiet.filter(sent) is False  # lowered to DEBUG, and the logger logs INFO
    assert sent.levelname == "DEBUG"
    other = logging.LogRecord(
        "celery.beat",
        logging.INFO,
        __file__,
        1,
        "Scheduler: Sending due task %s (%s)",
        ("nightly", "some.other.task"),
        None,
    )
    assert quiet.filter(other) is True and other.levelname == "INFO"
