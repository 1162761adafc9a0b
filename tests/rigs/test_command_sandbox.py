"""Gates and setup commands run code from a rig's branch: they get an allow-listed environment
and (with GASTOWN_SANDBOX=bwrap) a sandbox. Probed on real processes as an agent would: a gate
or setup command that prints `env` and tries to read the data dir's secret key, another rig's
worktree and the repository's main checkout; what it printed is stored and shown to readers."""

import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from common.process import sandbox_mode
from rigs import commands, merge_queue, operations, services
from rigs.models import MergeRequest, Rig
from tests.rigs.helpers import commit_file, register, wait_rig_state

pytestmark = pytest.mark.django_db(transaction=True)

BWRAP = shutil.which("bwrap") is not None


@pytest.fixture(params=["bwrap", "none"])
def sandbox(request, settings):
    """Each probe runs sandboxed and not: the environment allow-list holds either way; the
    file probes are refused only by the sandbox."""
    if request.param == "bwrap" and not BWRAP:
        pytest.skip("bubblewrap is not installed")
    settings.GASTOWN_SANDBOX = request.param
    return request.param


@pytest.fixture
def secrets_planted(monkeypatch, git_repo):
    """The server's secrets, as an attacker would look for them: in the environment (as in
    production), in the data dir, in the main checkout."""
    canary = f"canary-{uuid.uuid4().hex}"
    values = {
        "db": f"postgres://gastown:db-{canary}@db.internal/gastown",
        "redis": f"redis://:redis-{canary}@cache.internal:6379/0",
        "other_env": f"env-{canary}",
        "main_checkout": f"main-{canary}",
    }
    monkeypatch.setenv("DATABASE_URL", values["db"])
    monkeypatch.setenv("REDIS_URL", values["redis"])
    monkeypatch.setenv("GASTOWN_TEST_SERVER_ONLY", values["other_env"])
    key_file = Path(settings.DATA_DIR) / "secret_key"
    made = not key_file.exists()
    if made:
        key_file.write_text(f"key-{canary}\n")
        key_file.chmod(0o600)
    values["key_file"] = key_file.read_text().strip()
    (git_repo / ".env").write_text(f"TOKEN={values['main_checkout']}\n")  # untracked
    yield values
    if made:
        key_file.unlink(missing_ok=True)


def make_rig(repository, slug) -> Rig:
    with transaction.atomic():
        rig = services.rig_request(repository=repository, slug=slug)
    operations.rig_provision_run(rig.id)
    return wait_rig_state(rig, Rig.State.READY, Rig.State.FAILED)


def other_rig_with_private_file(repository) -> tuple[Rig, str]:
    other = make_rig(repository, "other")
    assert other.state == Rig.State.READY, other.failure_reason
    content = f"other-rig-{uuid.uuid4().hex}"
    (Path(other.worktree_path) / "private.txt").write_text(content)
    return other, content


def probe(other: Rig, git_repo: Path) -> str:
    """What an agent's test would do to exfiltrate secrets; then prove its own checkout works."""
    return "; ".join(
        [
            "echo '== env'",
            "env",
            "echo '== key'",
            f"cat {settings.DATA_DIR}/secret_key",
            f"ls {settings.DATA_DIR}",
            "echo '== other'",
            f"cat {other.worktree_path}/private.txt",
            "echo '== main'",
            f"cat {git_repo}/.env",
            "echo '== own'",
            "cat README.md",
            "git status --porcelain >/dev/null && echo 'git status: ok'",
            "git log -1 --format='git log: %s'",
            "echo '== end'",
        ]
    )


def assert_no_secret(log: str, secrets: dict[str, str]) -> None:
    assert "== end" in log, log  # the probe ran to the end
    # The environment is an allow-list: the names are not there, not only their values.
    for name in ("DATABASE_URL=", "REDIS_URL=", "GASTOWN_TEST_SERVER_ONLY=", "SECRET_KEY="):
        assert name not in log, log
    for value in (secrets["db"], secrets["redis"], secrets["other_env"], settings.SECRET_KEY):
        assert value not in log
    assert "VIRTUAL_ENV" not in log and ".venv/bin" not in log


def assert_files_hidden(log: str, secrets: dict[str, str], other_content: str) -> None:
    assert secrets["key_file"] not in log
    assert other_content not in log
    assert secrets["main_checkout"] not in log
    assert "gastown.sqlite3" not in log and "test.sqlite3" not in log  # the data dir is empty


def test_gate_gets_no_secret_and_no_other_files(git_repo, sandbox, secrets_planted):
    repository = register(git_repo)
    other, other_content = other_rig_with_private_file(repository)
    repository.gate_command = probe(other, git_repo)
    repository.save()
    rig = make_rig(repository, "api")
    commit_file(Path(rig.worktree_path), "feature.txt", "x\n", "api: the feature")
    operations.rig_sync_run(rig.id)
    with transaction.atomic():
        mr = services.merge_request_create(
            repository=repository, source_branch=rig.branch, target_branch="main", rig=rig
        )
    merge_queue.merge_queue_process(repository.id, "main")
    mr.refresh_from_db()
    log = mr.gate_log_tail
    assert mr.state == MergeRequest.State.MERGED, (mr.reason, log)
    # it can still read and use its own checkout (git reads objects from the common dir)
    assert "# app" in log and "git status: ok" in log, log
    assert "git log: Merge rig/api into main" in log, log
    assert_no_secret(log, secrets_planted)
    if sandbox == "bwrap":
        assert_files_hidden(log, secrets_planted, other_content)


def test_setup_command_gets_no_secret_and_no_other_files(git_repo, sandbox, secrets_planted):
    repository = register(git_repo)
    other, other_content = other_rig_with_private_file(repository)
    # It fails at the end, so that what it printed is stored (the rig's failure reason).
    repository.setup_command = probe(other, git_repo) + "; touch .setup-done; exit 3"
    repository.save()
    rig = make_rig(repository, "api")
    assert rig.state == Rig.State.FAILED
    log = rig.failure_reason
    assert "exited with 3" in log
    assert "# app" in log and "git status: ok" in log and "git log: docs" in log, log
    assert (Path(rig.worktree_path) / ".setup-done").exists()  # its worktree is writable
    assert_no_secret(log, secrets_planted)
    if sandbox == "bwrap":
        assert_files_hidden(log, secrets_planted, other_content)


def test_sandboxed_gate_cannot_write_outside_its_checkout(git_repo, tmp_path, settings):
    if not BWRAP:
        pytest.skip("bubblewrap is not installed")
    settings.GASTOWN_SANDBOX = "bwrap"
    outside = Path(settings.GASTOWN_WORKTREE_ROOT) / "planted"
    repository = register(
        git_repo, gate_command=f"echo pwned > {outside} 2>/dev/null; echo pwned > README.md"
    )
    result = merge_queue.gate_run(repository, "main")
    assert result.passed, result.log_tail
    assert not outside.exists()
    assert (git_repo / "README.md").read_text() == "# app\n"  # the main checkout is untouched


def test_setup_command_reads_the_files_linked_into_its_worktree(git_repo, settings):
    (git_repo / "shared").mkdir()
    (git_repo / "shared" / "config.txt").write_text("linked config\n")
    repository = register(
        git_repo, link_files=["shared"], setup_command="cat shared/config.txt > .seen"
    )
    rig = make_rig(repository, "api")
    assert rig.state == Rig.State.READY, rig.failure_reason
    assert (Path(rig.worktree_path) / ".seen").read_text() == "linked config\n"


def test_secrets_in_output_are_scrubbed_as_a_second_line_of_defence(git_repo, settings):
    """Even a secret that reaches a gate some other way (written in the repository) is not
    stored: the log tail is scrubbed of the server's secret values."""
    settings.SECRET_KEY = f"a-server-secret-{uuid.uuid4().hex}"
    repository = register(git_repo, gate_command=f"echo 'key is {settings.SECRET_KEY}'; exit 1")
    result = merge_queue.gate_run(repository, "main")
    assert settings.SECRET_KEY not in result.log_tail
    assert "key is [redacted]" in result.log_tail


def test_checkout_sandbox_binds_what_git_needs(git_repo):
    repository = register(git_repo)
    rig = make_rig(repository, "api")
    worktree = Path(rig.worktree_path)
    admin, common = commands.git_dirs(worktree)
    assert common == (git_repo / ".git").resolve()
    assert admin == common / "worktrees" / "api"
    box = commands.checkout_sandbox(worktree)
    assert box.writable == (str(worktree), str(admin))
    # the pointers that would redirect the server's next git command stay read-only
    assert box.readable == (
        str(common),
        str(worktree / ".git"),
        str(admin / "commondir"),
        str(admin / "gitdir"),
        str(admin / "config.worktree"),
    )
    assert sandbox_mode() in ("bwrap", "none")


def test_worktree_root_and_locks_are_private(git_repo):
    repository = register(git_repo)
    rig = make_rig(repository, "api")
    root = Path(settings.GASTOWN_WORKTREE_ROOT)
    for directory in (root, root / repository.name, root / repository.name / ".locks"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    lock = root / repository.name / ".locks" / f"{rig.slug}.lock"
    assert lock.stat().st_mode & 0o077 == 0


# --- planted git configuration (found by an attacker with an agent's token) -----------------------


def test_an_agent_cannot_plant_a_worktree_config(git_repo, settings):
    """`config.worktree` in a worktree's admin dir is read by git once any sparse rig turns on
    `extensions.worktreeConfig`; a `core.fsmonitor` there would run as the server. Inside the
    agent's sandbox it exists (empty) and is read-only."""
    if not BWRAP:
        pytest.skip("bubblewrap is not installed")
    settings.GASTOWN_SANDBOX = "bwrap"
    from common import process

    repository = register(git_repo)
    worktree = Path(make_rig(repository, "api").worktree_path)
    admin, _common = commands.git_dirs(worktree)
    box = process.worktree_sandbox(worktree)
    result = process.command_run(
        "d=$(git rev-parse --git-dir);"
        ' echo "[core] fsmonitor = touch /tmp/x" > "$d/config.worktree"'
        ' ; rm -f "$d/config.worktree"; mv "$d/HEAD" "$d/config.worktree";'
        " git status --short >/dev/null && echo still-works",
        cwd=worktree,
        env=process.command_environment(home=worktree),
        timeout=30,
        sandbox=box,
    )
    assert "still-works" in result.output
    assert (admin / "config.worktree").read_text() == ""
    assert (admin / "HEAD").exists()


def test_server_git_ignores_a_planted_fsmonitor(git_repo, tmp_path):
    """Defence in depth: even a config file that says so cannot make our git run a program."""
    from rigs import git

    repository = register(git_repo)
    worktree = Path(make_rig(repository, "web").worktree_path)
    admin, common = commands.git_dirs(worktree)
    marker = tmp_path / "fsmonitor-ran"
    git.run(common, "config", "extensions.worktreeConfig", "true")
    (admin / "config.worktree").write_text(f'[core]\n\tfsmonitor = "touch {marker}; false"\n')
    git.is_dirty(worktree)
    assert not marker.exists()


def test_the_repository_lock_does_not_follow_a_symlink(git_repo, tmp_path):
    from rigs import git

    target = tmp_path / "created-by-the-server"
    lock = git_repo / ".git" / "gastown-worktrees.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(target)
    with pytest.raises(OSError), git.repository_lock(git_repo):
        pass
    assert not target.exists()
