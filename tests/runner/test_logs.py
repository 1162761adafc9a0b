"""Run logs: bounded while written (head, then tail), pruned when old. The supervisor writing
a capped log for a real agent process is in tests/runner/test_runs.py."""

import os
import time

import pytest

from runner.logs import CappedLog, run_logs_prune
from runner.models import AgentRun
from tests import factories


def test_a_log_keeps_its_head_and_tail_and_says_what_it_left_out(tmp_path):
    path = tmp_path / "run-1.log"
    log = CappedLog(path, limit=100)
    log.note("# gastown: header\n")
    log.write(b"a" * 60)
    log.write(b"b" * 50 + b"c" * 40)  # 40 bytes fit, 50 are over the limit
    log.write(b"d" * 20 + b"\n")
    log.close("# gastown: exited with code 0\n")
    text = path.read_text()
    head, notice, rest = text.partition("\n# gastown: the log limit of 100 bytes is reached")
    assert head == "# gastown: header\n" + "a" * 60 + "b" * 40
    assert "its last 25 bytes are added when the run ends" in notice + rest
    # 10 b + 40 c + 21 = 71 bytes over the limit, the last 25 of them kept
    assert "\n# gastown: 46 bytes left out; the last 25:\n" + "c" * 4 + "d" * 20 + "\n" in rest
    assert text.endswith("d\n# gastown: exited with code 0\n")


def test_a_log_without_limit_keeps_everything(tmp_path):
    path = tmp_path / "run-1.log"
    log = CappedLog(path, limit=0)
    log.write(b"x" * 10_000)
    log.close("end\n")
    assert path.read_bytes() == b"x" * 10_000 + b"end\n"


@pytest.mark.django_db
def test_old_logs_are_pruned_but_not_those_of_live_runs(tmp_path, settings):
    settings.GASTOWN_RUN_LOG_DIR = tmp_path
    rig = factories.rig()
    live = AgentRun.objects.create(rig=rig, agent=rig.agent, command="x", state="running")
    done = AgentRun.objects.create(rig=rig, agent=rig.agent, command="x", state="succeeded")
    fresh = AgentRun.objects.create(rig=rig, agent=rig.agent, command="x", state="failed")
    old = time.time() - 31 * 86400
    for name in (f"run-{live.id}.log", f"run-{done.id}.log", "run-999999.log", "notes.txt"):
        (tmp_path / name).write_text("output\n")
        os.utime(tmp_path / name, (old, old))
    (tmp_path / f"run-{fresh.id}.log").write_text("output\n")

    assert run_logs_prune(older_than_days=0) == []  # 0 keeps everything
    deleted = run_logs_prune()  # the default: 30 days
    assert sorted(p.name for p in deleted) == sorted([f"run-{done.id}.log", "run-999999.log"])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f"run-{live.id}.log", f"run-{fresh.id}.log", "notes.txt"])
