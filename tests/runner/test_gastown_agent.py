"""`bin/gastown-agent`, the scripted agent, end to end: a real daphne server, a real Celery
worker (sync, the merge queue), a real git repository and rig worktree, and the agent run as a
subprocess that uses only `gt` and `git`. The block parser and path rules are also checked
directly (the script is loaded as a module)."""

import importlib.machinery
import importlib.util
import os
import re
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from convoys import services as convoy_services
from convoys.models import Bead
from notifications.models import Notification
from notifications.services import notification_send
from rigs import operations, services
from rigs.models import MergeRequest, Rig
from tests.conftest import BASE_DIR
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file, register, wait_rig_state

AGENT = BASE_DIR / "bin" / "gastown-agent"
USAGE_RE = re.compile(
    r"^GT_USAGE input_tokens=(\d+) output_tokens=(\d+) cost_usd=(\d+(?:\.\d+)?)$", re.M
)


def load_agent_module():
    """The script as a module (it has no .py suffix); registered first, as dataclasses need."""
    if "gastown_agent" in sys.modules:
        return sys.modules["gastown_agent"]
    loader = importlib.machinery.SourceFileLoader("gastown_agent", str(AGENT))
    spec = importlib.util.spec_from_loader("gastown_agent", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gastown_agent"] = module
    loader.exec_module(module)
    return module


def block(path: str, content: str, mode: str = "") -> str:
    return f"```gastown-change path={path}{f' mode={mode}' if mode else ''}\n{content}```\n"


def ready_rig(git_repo: Path, name: str, slug: str) -> tuple[Rig, str]:
    """A provisioned rig (a real worktree) of a new agent, and the agent's token."""
    repository = register(git_repo)
    agent, token = services.agent_create(name=name)
    with transaction.atomic():
        rig = services.rig_request(repository=repository, slug=slug, agent=agent)
    operations.rig_provision_run(rig.id)  # (the worker may be doing it already)
    wait_rig_state(rig, Rig.State.READY, Rig.State.FAILED)
    assert rig.state == Rig.State.READY, rig.failure_reason
    return rig, token


def run_agent(
    url: str, token: str, rig: Rig, home: Path, *args: str, python: bool = False
) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{BASE_DIR / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),  # no personal git config; the agent sets its own identity
        "GT_URL": url,
        "GT_TOKEN": token,
        "GT_RIG": str(rig.id),
        "PYTHONUNBUFFERED": "1",
    }
    # Run as the runner does (the executable), or under `python -I -S` to prove it needs
    # nothing beyond the standard library.
    command = [sys.executable, "-I", "-S", str(AGENT)] if python else [str(AGENT)]
    return subprocess.run(
        [*command, "--pace", "0.05", "--idle-timeout", "60", *args],
        cwd=rig.worktree_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def succeeded(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout[-4000:], result.stderr)
    return result.stdout


def usage(stdout: str, steps: int | None = None) -> tuple[int, int, str]:
    """The totals of the last usage line. One line per closed bead comes before it (running
    totals, never going down: `steps` of them when given)."""
    found = USAGE_RE.findall(stdout)
    assert found, stdout[-2000:]
    assert stdout.rstrip().splitlines()[-1].startswith("GT_USAGE "), "the last line"
    if steps is not None:
        assert len(found) == steps + 1, found
    costs = [Decimal(cost) for _, _, cost in found]
    assert costs == sorted(costs), found
    input_tokens, output_tokens, cost = found[-1]
    return int(input_tokens), int(output_tokens), cost


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_works_every_bead_and_lands_them(asgi_server, celery_worker, git_repo, tmp_path):
    rig, token = ready_rig(git_repo, "scripted", "api")
    endpoint = "def token_endpoint(user):\n    return {'token': f'v2:{user}'}\n"
    tests_file = "from api.tokens import token_endpoint\n\n\ndef test_it():\n    assert 1\n"
    first = convoy_services.bead_create(
        title="Add the token endpoint",
        rig=rig,
        priority=0,
        description="Write it.\n\n"
        + block("api/tokens.py", endpoint)
        + block("README.md", "\nTokens: see api/tokens.py.\n", mode="append"),
    )
    notes = convoy_services.bead_create(
        title="Write down the plan",
        rig=rig,
        priority=1,
        description="Which tokens we issue.",
        acceptance_criteria="The plan is written.",
    )
    tests = convoy_services.bead_create(
        title="Test the endpoint",
        rig=rig,
        priority=0,
        description=block("tests/test_tokens.py", tests_file),
    )
    convoy_services.bead_dependency_add(bead=tests, depends_on=first)

    result = run_agent(asgi_server, token, rig, tmp_path, "--cost-per-bead", "0.25")
    out = succeeded(result)

    assert "# Gas Town briefing for agent scripted" in out  # gt prime, printed
    beads = {b.pk: b for b in Bead.objects.filter(rig=rig)}
    assert all(b.status == Bead.Status.CLOSED for b in beads.values()), beads
    assert beads[tests.pk].closed_at > beads[first.pk].closed_at  # it waited for its blocker
    assert "scripted change: wrote api/tokens.py, README.md" in beads[first.pk].close_reason

    # real commits on the rig branch, by the agent's own identity
    subjects = run_git(git_repo, "log", "--format=%s", rig.branch).splitlines()
    for bead in (first, notes, tests):
        assert f"{bead.short_id}: {bead.title}" in subjects
    body = run_git(git_repo, "log", "-1", "--format=%B", f"{rig.branch}^{{/{first.short_id}:}}")
    assert f"Bead {first.short_id}, by gastown-agent" in body
    authors = run_git(git_repo, "log", "--format=%an <%ae>", f"main..{rig.branch}")
    assert not authors or set(authors.splitlines()) == {"scripted <scripted@agents.gastown.local>"}

    # landed: the merge request merged and main holds the scripted content
    merge = MergeRequest.objects.filter(rig=rig).order_by("-id").first()
    assert merge.state == MergeRequest.State.MERGED, (merge.state, merge.reason)
    assert run_git(git_repo, "show", "main:api/tokens.py") + "\n" == endpoint
    assert run_git(git_repo, "show", "main:tests/test_tokens.py") + "\n" == tests_file
    assert run_git(git_repo, "show", "main:README.md") == "# app\n\nTokens: see api/tokens.py."
    note = run_git(git_repo, "show", f"main:notes/api/{notes.short_id}.md")
    assert "# Write down the plan" in note and "Which tokens we issue." in note
    assert "The plan is written." in note
    author = run_git(git_repo, "log", "-1", "--format=%ae", f"main^{{/{first.short_id}:}}")
    assert author == "scripted@agents.gastown.local"

    # usage: gt output read, file content written (run_git strips the note's last newline)
    input_tokens, output_tokens, cost = usage(out, steps=3)  # one line per bead, then the last
    assert "cost_usd=0.25\n" in out and "cost_usd=0.50\n" in out
    written = endpoint + "\nTokens: see api/tokens.py.\n" + tests_file + note + "\n"
    assert input_tokens > 1000 and output_tokens == len(written.encode())
    assert cost == "0.75"

    # a second run finds everything closed and landed: nothing to do, no new commit
    tip = run_git(git_repo, "rev-parse", rig.branch)
    again = succeeded(run_agent(asgi_server, token, rig, tmp_path, "--once", python=True))
    assert "all 3 bead(s) of the rig are closed" in again
    assert run_git(git_repo, "rev-parse", rig.branch) == tip
    assert usage(again)[1:] == (0, "0")


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_interface_change_gets_a_follow_up(asgi_server, celery_worker, git_repo, tmp_path):
    rig, token = ready_rig(git_repo, "follower", "web")
    # the target moves on under the rig, and a cascade says an interface changed
    moved = commit_file(git_repo, "auth/tokens.py", "def make_token(user, scope):\n    ...\n")
    notification = notification_send(
        rig=rig,
        kind=Notification.Kind.INTERFACE_CHANGED,
        severity=Notification.Severity.WARNING,
        summary="Interface changed: auth/tokens.py (make_token)",
        action="Update your usage of the changed interface: make_token.",
        changes={
            "files": [{"path": "auth/tokens.py", "added": 2, "deleted": 2, "status": "M"}],
            "symbols": {"auth/tokens.py": ["make_token"]},
            "range": "0123456789ab..ba9876543210",
        },
    )

    out = succeeded(run_agent(asgi_server, token, rig, tmp_path, python=True))

    notification.refresh_from_db()
    assert notification.acked_at is not None
    assert "rebased onto main" in out or "merged main" in out
    # the rig branch has the moved target, then the follow-up commit
    subjects = run_git(git_repo, "log", "--format=%s", rig.branch).splitlines()
    assert "Follow up: Interface changed: auth/tokens.py (make_token)" in subjects
    run_git(git_repo, "merge-base", "--is-ancestor", moved, rig.branch)
    changes = run_git(git_repo, "show", "main:notes/web/interface-changes.md")
    line = next(x for x in changes.splitlines() if x.startswith("- "))
    assert "Interface changed: auth/tokens.py (make_token)" in line
    assert f"notification #{notification.id}" in line
    assert "auth/tokens.py: make_token" in line and "0123456789ab..ba9876543210" in line
    # no beads: the leg note (no leg: work.md), then landed
    assert "# Work in rig web" in run_git(git_repo, "show", "main:notes/web/work.md")
    assert MergeRequest.objects.get(rig=rig).state == MergeRequest.State.MERGED
    assert usage(out)[2] == "0"


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_unsafe_paths_are_refused(asgi_server, celery_worker, git_repo, tmp_path):
    rig, token = ready_rig(git_repo, "careful", "safe")
    worktree = Path(rig.worktree_path)
    outside = tmp_path / "outside.txt"  # absolute, and somewhere harmless if it were written
    bead = convoy_services.bead_create(
        title="Try to escape",
        rig=rig,
        description=block("../escape", "nope\n")
        + block(str(outside), "nope\n")
        + block(".git/hooks/post-commit", "#!/bin/sh\necho owned\n")
        + block("src/ok.py", "OK = True\n"),
    )

    out = succeeded(run_agent(asgi_server, token, rig, tmp_path))

    assert not (worktree.parent / "escape").exists() and not outside.exists()
    assert not (git_repo / ".git" / "hooks" / "post-commit").exists()
    for path in ("../escape", str(outside), ".git/hooks/post-commit"):
        assert f"refused block path={path!r}" in out
    bead.refresh_from_db()
    assert bead.status == Bead.Status.CLOSED
    assert bead.close_reason.startswith("scripted change: wrote src/ok.py")
    assert "refused ../escape ('..' would leave the worktree)" in bead.close_reason
    assert f"{outside} (absolute paths are refused" in bead.close_reason
    assert run_git(git_repo, "show", "main:src/ok.py") == "OK = True"
    assert run_git(git_repo, "ls-tree", "-r", "--name-only", "main").count("escape") == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_unresolvable_conflict_exits_5(asgi_server, celery_worker, git_repo, tmp_path):
    rig, token = ready_rig(git_repo, "clasher", "clash")
    convoy_services.bead_create(
        title="Rewrite make_token",
        rig=rig,
        description=block("auth/tokens.py", "def make_token(user):\n    return 'mine'\n"),
    )
    # meanwhile the target changes the same lines (no notification: the agent finds out at done)
    commit_file(git_repo, "auth/tokens.py", "def make_token(user):\n    return 'theirs'\n")

    result = run_agent(asgi_server, token, rig, tmp_path, python=True)

    assert result.returncode == 5, (result.stdout[-3000:], result.stderr)
    assert "merge conflicted" in result.stdout and "auth/tokens.py" in result.stdout
    assert "merging main conflicted, aborted" in result.stdout
    worktree = Path(rig.worktree_path)
    assert run_git(worktree, "status", "--porcelain") == ""  # the merge was aborted
    assert MergeRequest.objects.get(rig=rig).state == MergeRequest.State.CONFLICTED
    assert usage(result.stdout)[1] > 0


@pytest.mark.django_db(transaction=True)
def test_resumes_its_own_bead_then_waits_until_idle(asgi_server, git_repo, tmp_path):
    """A restarted run picks up the bead an earlier run claimed (and wrote, but died before
    committing), then stops (exit 0) when what is left stays unready past --idle-timeout.
    (No worker: nothing here needs Gas Town's git work.)"""
    agent, token = services.agent_create(name="restarted")
    worktree = tmp_path / "wt"
    run_git(git_repo, "worktree", "add", "-q", "-b", "rig/r1", str(worktree), "main")
    rig = Rig.objects.create(
        repository=register(git_repo),
        slug="r1",
        agent=agent,
        branch="rig/r1",
        worktree_path=str(worktree),
        state=Rig.State.READY,
    )
    held = convoy_services.bead_create(
        title="Half done", rig=rig, description=block("src/half.py", "HALF = 1\n")
    )
    convoy_services.bead_claim(bead=held, agent=agent)
    (worktree / "src").mkdir()
    (worktree / "src" / "half.py").write_text("HALF = 1\n")  # written, never committed
    later = convoy_services.bead_create(
        title="Not yet", rig=rig, defer_until=timezone.now() + timedelta(days=1)
    )

    result = run_agent(asgi_server, token, rig, tmp_path, "--idle-timeout", "1", python=True)

    out = succeeded(result)
    assert f"resuming {held.short_id}: Half done" in out
    assert "giving up for now" in out
    held.refresh_from_db()
    later.refresh_from_db()
    assert held.status == Bead.Status.CLOSED and later.status == Bead.Status.OPEN
    assert held.close_reason.startswith("scripted change: wrote src/half.py in ")
    assert run_git(worktree, "log", "-1", "--format=%s") == f"{held.short_id}: Half done"
    assert run_git(worktree, "show", "HEAD:src/half.py") == "HALF = 1"
    assert run_git(worktree, "status", "--porcelain") == ""
    assert not MergeRequest.objects.exists()  # it did not finish: work is still open


# --- the parts, directly ------------------------------------------------------------------------


def test_blocks_are_parsed_in_order_with_their_modes():
    agent = load_agent_module()
    description = (
        "Intro text.\n\n"
        + block("a.py", "x = 1\n")
        + "between\n"
        + block("notes/b.md", "more\n", mode="append")
        + '````gastown-change path="docs/with space.md"\n```\ninner fence\n```\n````\n'
        + block("c.txt", "", mode="write")
        + block("d.txt", "y\n", mode="replace")
        + "```gastown-change\nno path\n```\n"
        + "```python\nnot a change\n```\n"
    )
    changes, refusals = agent.parse_changes(description.replace("\n", "\r\n"))
    assert [(c.path, c.mode, c.content) for c in changes] == [
        ("a.py", "write", "x = 1\n"),
        ("notes/b.md", "append", "more\n"),
        ("docs/with space.md", "write", "```\ninner fence\n```\n"),
        ("c.txt", "write", ""),
    ]
    assert [(r.path, r.reason) for r in refusals] == [
        ("d.txt", "mode=replace is not write or append"),
        ("?", "the block has no path=..."),
    ]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("src/a.py", None),
        ("a", None),
        (".github/workflows/ci.yml", None),
        ("/etc/x", "absolute"),
        ("../escape", "'..'"),
        ("src/../../x", "'..'"),
        ("./a.py", "not normalized"),
        ("src//a.py", "not normalized"),
        ("src/", "not normalized"),
        (".git/config", ".git/"),
        ("sub/.GIT/hooks/x", ".git/"),
        ("a\\b", "backslash"),
        ("", "no path"),
    ],
)
def test_path_rules(path, problem):
    found = load_agent_module().path_problem(path)
    assert (found is None) if problem is None else (problem in found), found


def test_symlinks_out_of_the_worktree_are_caught(tmp_path):
    agent = load_agent_module()
    worktree = tmp_path / "wt"
    (worktree / "inside").mkdir(parents=True)
    (worktree / "link").symlink_to(tmp_path)
    assert agent.is_inside(worktree, worktree / "inside" / "new.txt")
    assert not agent.is_inside(worktree, worktree / "link" / "x.txt")


def test_usage_errors_still_print_the_usage_line():
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(AGENT), "--max-beads", "-2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "--max-beads" in result.stderr
    assert usage(result.stdout) == (0, 0, "0")
