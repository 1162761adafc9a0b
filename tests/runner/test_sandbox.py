"""Agents run sandboxed (bubblewrap): real worker, real supervisor, real bwrap. An agent that
tries to read the server's secrets, the database, another rig's worktree and its supervisor's
environment gets none of them into its log, and can still commit on its branch and call the
API; stopping it gives it its grace period and leaves nothing running."""

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

from common import process
from runner import services
from runner.models import AgentRun
from tests.rigs.helpers import wait_for
from tests.runner.conftest import wait_run

pytestmark = [
    pytest.mark.worker,
    pytest.mark.runner_env(GASTOWN_SANDBOX="bwrap"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"),
]
S = AgentRun.State

# The agent waits for the test to write `go` into its worktree (the supervisor's host pid),
# then tries everything it must not be able to do, and what it must still be able to do.
PROBE = r"""
mark() { echo "MARK:$1:$1"; }  # the command is in the log: markers must not be
while [ ! -s go ]; do sleep 0.05; done
sup=$(cat go); rm -f go
echo "== secret_key"; cat "$DATA_DIR/secret_key"
echo "== database"; cat "$DB_PATH" | head -c 64
echo "== decoy database"; cat "$DATA_DIR/gastown.sqlite3" | head -c 64
echo "== other rig"; cat "$OTHER/private.txt"; ls "$OTHER"
echo "== supervisor environ"; tr '\0' '\n' < /proc/$sup/environ
echo "== every environ"; for f in /proc/[0-9]*/environ; do tr '\0' '\n' < "$f"; done
echo "== env"; env
echo "== undo the hiding"; umount "$DATA_DIR" && ls "$DATA_DIR"
echo "== repository config"; echo '[core]' >> "$COMMON/config" && mark config
echo "== hooks"; printf '#!/bin/sh\necho pwned\n' > "$COMMON/hooks/post-checkout" && mark hook
echo "== own worktree"; echo "made in the sandbox" > sandboxed.txt
git add sandboxed.txt && git commit -q -m "from the sandbox" && mark committed
echo "== api"; gt whoami
curl -fsS "$GT_URL/healthz" && mark curl
echo "== home"; echo kept > "$HOME/note" && cat "$HOME/note"
"""


def _probe_command(other_worktree: str, common: Path) -> str:
    database = settings.DATABASES["default"]
    db_path = str(database["NAME"]) if database["ENGINE"].endswith("sqlite3") else "/nonexistent"
    variables = {
        "DATA_DIR": str(settings.DATA_DIR),
        "DB_PATH": db_path,
        "OTHER": other_worktree,
        "COMMON": str(common),
    }
    assigns = "".join(f"{name}='{value}'; " for name, value in variables.items())
    return assigns + PROBE


def _environ_values(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if b"=" in item)


def _names(pids: list[int]) -> set[str]:
    names = set()
    for pid in pids:
        try:
            names.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return names


def _section(log: str, name: str) -> str:
    return log.split(f"== {name}\n", 1)[1].split("\n== ", 1)[0]


def test_a_sandboxed_agent_cannot_reach_the_servers_secrets_but_can_work(ready_rig, git_repo):
    key = "secret-key-" + secrets.token_hex(16)
    (settings.DATA_DIR / "secret_key").write_text(key)
    decoy = settings.DATA_DIR / "gastown.sqlite3"
    if not decoy.exists():
        decoy.write_bytes(b"SQLite format 3\0decoy database for the sandbox test")
    other = ready_rig("sleep 0", slug="other")
    private = "other-rigs-private-" + secrets.token_hex(8)
    (Path(other.worktree_path) / "private.txt").write_text(private)
    _, common = process.git_dirs(other.worktree_path)
    config_before = (common / "config").read_text()

    rig = ready_rig(_probe_command(other.worktree_path, common), slug="probe")
    run = services.agent_run_request(rig=rig, requested_by="test")
    wait_run(run, S.RUNNING)
    # the run's processes inside the sandbox's PID namespace are found from the host
    wait_for(lambda: {"bwrap", "sh"} <= _names(process.run_processes(run.id)), 10, message="sh")
    assert process.process_is_run(run.pid, run.id)
    supervisor_env = _environ_values(run.supervisor_pid)
    server_secrets = [
        supervisor_env["SECRET_KEY"],
        *(supervisor_env[n] for n in ("DATABASE_URL", "REDIS_URL") if supervisor_env.get(n)),
    ]
    (Path(rig.worktree_path) / "go").write_text(str(run.supervisor_pid))

    wait_run(run, S.SUCCEEDED, S.FAILED)
    raw = Path(run.log_path).read_bytes()
    log = raw.decode("utf-8", "replace")
    assert run.state == S.SUCCEEDED, log
    for secret in [key, private, *server_secrets]:
        assert secret not in log
    assert b"SQLite format 3" not in raw
    assert "No such file" in _section(log, "secret_key")
    assert "No such file" in _section(log, "other rig")
    assert "No such file" in _section(log, "supervisor environ")
    assert "SECRET_KEY=" not in _section(log, "env")
    assert "GT_TOKEN=gtr_" in _section(log, "env")  # its own token it has
    assert "MARK:config:config" not in log and "Read-only file system" in log
    assert "MARK:hook:hook" not in log
    assert (common / "config").read_text() == config_before
    assert not (common / "hooks" / "post-checkout").exists()
    # ... and it works: commits on its branch, calls the API, keeps its home
    assert "MARK:committed:committed" in log
    shown = subprocess.run(
        ["git", "-C", str(git_repo), "show", f"{rig.branch}:sandboxed.txt"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == "made in the sandbox\n"
    assert f"agent {rig.agent.name}" in _section(log, "api")
    assert "MARK:curl:curl" in log
    assert _section(log, "home").startswith("kept\n")
    assert (process.agent_home(rig.id) / "note").read_text() == "kept\n"
    wait_for(lambda: not process.run_processes(run.id), 10, message="nothing left running")


def test_stopping_a_sandboxed_agent_gives_it_its_grace_then_leaves_nothing(ready_rig):
    rig = ready_rig(
        "trap 'echo got-TERM; sleep 0.3; echo cleaned-up; exit 0' TERM; "
        "sleep 300 & sleep 301 & echo ready; wait"
    )
    run = services.agent_run_request(rig=rig, requested_by="test")
    wait_run(run, S.RUNNING)
    wait_for(lambda: "ready" in Path(run.log_path).read_text(), 10, message="agent ready")
    services.agent_run_stop(run=run, requested_by="test")
    wait_run(run, S.STOPPED, timeout=30)
    log = Path(run.log_path).read_text()
    assert "got-TERM" in log and "cleaned-up" in log, log
    wait_for(lambda: not process.run_processes(run.id), 10, message="no process left")


def test_a_killed_supervisor_takes_its_sandbox_down(ready_rig):
    rig = ready_rig("sleep 300 & sleep 301; wait")
    run = services.agent_run_request(rig=rig, requested_by="test")
    wait_run(run, S.RUNNING)
    wait_for(lambda: len(process.run_processes(run.id)) >= 5, 10, message="agent children")
    os.kill(run.supervisor_pid, signal.SIGKILL)
    # --die-with-parent: bwrap and everything inside go with the supervisor, on their own
    wait_for(lambda: not process.run_processes(run.id), 10, message="the sandbox gone")


def _git(cwd: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "HOME": str(cwd),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def layout(settings, monkeypatch):
    """A production-like layout outside /tmp (which the sandbox hides wholesale): a data dir
    with its secret key and worktrees, a repository root, the server user's home with a
    secret and a tool on PATH."""
    base = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="gastown-sandbox-"))
    data, repos, home = base / "data", base / "repositories", base / "server-home"
    for path in (data / "worktrees" / "app", repos, home / ".ssh", home / ".local" / "bin"):
        path.mkdir(parents=True)
    (data / "secret_key").write_text("the-secret-key")
    (home / ".ssh" / "id_ed25519").write_text("the-ssh-key")
    tool = home / ".local" / "bin" / "mytool"
    tool.write_text("#!/bin/sh\necho tool-ok\n")
    tool.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")
    settings.DATA_DIR = data
    settings.GASTOWN_WORKTREE_ROOT = data / "worktrees"
    settings.GASTOWN_RUN_LOG_DIR = data / "runs"
    settings.GASTOWN_REPOSITORY_ROOTS = [repos]
    settings.GASTOWN_SANDBOX = "bwrap"
    repo = repos / "app"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("main checkout\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "initial")
    for slug in ("r1", "r2"):
        _git(
            repo,
            "worktree",
            "add",
            "-q",
            "-b",
            f"rig/{slug}",
            str(data / "worktrees" / "app" / slug),
        )
    (data / "worktrees" / "app" / "r2" / "private.txt").write_text("r2-private")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_the_sandbox_hides_the_servers_files_wherever_they_live(layout):
    data = layout / "data"
    worktree = data / "worktrees" / "app" / "r1"
    admin, common = process.git_dirs(worktree)
    home = process.agent_home(1)
    script = f"""
    cat {data}/secret_key {layout}/server-home/.ssh/id_ed25519 {data}/worktrees/app/r2/private.txt
    ls {layout}/repositories/app
    mytool; gt --help >/dev/null && echo gt-ok
    echo '[core]' >> {common}/config || echo config-refused
    echo x > {common}/hooks/post-checkout || echo hooks-refused
    echo x > {common}/worktrees/r2/HEAD || echo other-worktree-refused
    echo gitdir: /elsewhere > .git || echo pointer-refused
    echo /elsewhere > {admin}/commondir || echo commondir-refused
    echo change > file.txt && git add file.txt && git commit -q -m sandboxed && echo committed
    """
    sandbox = process.worktree_sandbox(worktree, home=home)
    done = subprocess.run(
        process.sandbox_argv(["/bin/sh", "-c", script], sandbox),
        cwd=worktree,
        env=process.agent_environment(
            run_id=1, token="t", rig_id=1, agent_name="a", worktree=str(worktree), branch="rig/r1"
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    for secret in ("the-secret-key", "the-ssh-key", "r2-private", "README.md"):
        assert secret not in out
    for word in ("tool-ok", "gt-ok", "config-refused", "hooks-refused", "committed"):
        assert word in out, out
    for word in ("other-worktree-refused", "pointer-refused", "commondir-refused"):
        assert word in out, out
    assert (
        _git(layout / "repositories" / "app", "log", "-1", "--format=%s", "rig/r1") == "sandboxed\n"
    )
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):  # the test database lives outside this data dir
        read = subprocess.run(
            process.sandbox_argv(["/bin/cat", str(database["NAME"])], sandbox),
            capture_output=True,
            timeout=60,
        )
        assert b"SQLite format 3" not in read.stdout


def test_without_the_sandbox_commands_run_as_they_are(settings):
    settings.GASTOWN_SANDBOX = "none"
    assert process.sandbox_argv(["true"], process.Sandbox()) == ["true"]
