"""Cascades: the article's scenario end to end on real repositories."""

from pathlib import Path

import pytest
from django.db import transaction

import cascades
from cascades import landed, overlap
from convoys.models import Bead, BeadDependency
from notifications.models import Notification
from rigs import git, merge_queue, operations, services
from rigs.models import MergeRequest, Rig
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file, register, wait_for, wait_rig_state

pytestmark = pytest.mark.django_db(transaction=True)
K = Notification.Kind

TOKENS_V2 = "def make_token(user):\n    return f'v2:{user}:signed'\n"


@pytest.fixture
def app_repo(git_repo):
    """The sample repository: auth (the interface), frontend, tests, docs."""
    commit_file(git_repo, "frontend/app.js", "import { token } from '../auth'\n", "frontend")
    commit_file(git_repo, "tests/test_tokens.py", "def test_token():\n    assert True\n")
    commit_file(git_repo, "requirements.txt", "django==5.2\n", "deps")
    return git_repo


def rig(repository, slug, **kw) -> Rig:
    with transaction.atomic():
        r = services.rig_request(repository=repository, slug=slug, **kw)
    operations.rig_provision_run(r.id)
    wait_rig_state(r, Rig.State.READY, Rig.State.FAILED)
    assert r.state == Rig.State.READY, r.failure_reason
    return r


def edit(r: Rig, path: str, content: str, message: str = "") -> Rig:
    commit_file(Path(r.worktree_path), path, content, message or f"{r.slug}: {path}")
    with transaction.atomic():
        operations.rig_sync_run(r.id)
    r.refresh_from_db()
    return r


def land(r: Rig) -> MergeRequest:
    with transaction.atomic():
        mr = services.merge_request_create(
            repository=r.repository, source_branch=r.branch, target_branch="main", rig=r
        )
    merge_queue.merge_queue_process(r.repository_id, "main")
    mr.refresh_from_db()
    assert mr.state == MergeRequest.State.MERGED, mr.reason
    return mr


def cascade_of(mr: MergeRequest) -> list[Notification]:
    """Run the landing's cascade here (the worker does it in production; one test below
    checks that path end to end)."""
    old = mr.target_commit
    new = run_git(Path(mr.repository.path), "rev-parse", "main")
    return landed.cascade_merge_landed(
        repository_id=mr.repository_id,
        target_branch="main",
        old_tip=old,
        new_tip=new,
        merge_request_ids=[mr.id],
    )


def inbox(r: Rig) -> dict[str, Notification]:
    return {n.kind: n for n in Notification.objects.filter(rig=r, state="open")}


@pytest.fixture
def town(app_repo):
    repository = register(app_repo)
    return {
        "repository": repository,
        "api": rig(repository, "api", scope=["auth/**"], role="api"),
        "frontend": rig(repository, "frontend", scope=["frontend/**"], watch=["auth/**"]),
        "tests": rig(repository, "tests", scope=["tests/**"], watch=["auth/**"], role="tests"),
        "docs": rig(repository, "docs", scope=["docs/**"], role="docs"),
    }


def test_token_format_change_reaches_the_right_rigs(town):
    api = edit(town["api"], "auth/tokens.py", TOKENS_V2, "api: sign tokens (v2 format)")
    clash = rig(town["repository"], "clash", scope=["auth/**"])
    clash = edit(clash, "auth/tokens.py", "def make_token(user):\n    return 'v3'\n")
    mr = land(api)
    cascade_of(mr)

    for name in ("frontend", "tests"):
        notes = inbox(town[name])
        change = notes[K.INTERFACE_CHANGED]
        assert "auth/tokens.py" in change.summary and "make_token" in change.summary
        assert change.changes["files"][0]["path"] == "auth/tokens.py"
        assert change.changes["symbols"]["auth/tokens.py"] == ["make_token"]
        assert "v2:" in change.changes["excerpt"]
        assert change.action.startswith("Update your usage")
        assert change.source_merge_request_id == mr.id and change.depth == 0
        assert change.source_commits.endswith(
            run_git(Path(mr.repository.path), "rev-parse", "main")
        )
    docs = inbox(town["docs"])
    # docs watches nothing that changed: only "base moved" (plus its follow-up work, below).
    assert set(docs) == {K.BASE_MOVED, K.ASSIGNED}
    assert "2 commit(s) behind" in docs[K.BASE_MOVED].summary  # the change + its merge
    forecast = inbox(clash)[K.REBASE_NEEDED]
    assert forecast.changes["conflicts"] == ["auth/tokens.py"]
    assert K.BASE_MOVED not in inbox(clash)
    # Everyone in the cascade shares one id.
    cascade_ids = set(
        Notification.objects.filter(source_merge_request=mr).values_list("cascade", flat=True)
    )
    assert len(cascade_ids) == 1


def test_conceptual_merge_creates_follow_up_beads(town):
    api = edit(town["api"], "auth/tokens.py", TOKENS_V2)
    mr = land(api)
    cascade_of(mr)
    docs_bead = Bead.objects.get(rig=town["docs"], discovered_from_merge_request=mr)
    assert docs_bead.title == "Update the docs for make_token"
    tests_bead = Bead.objects.get(rig=town["tests"], discovered_from_merge_request=mr)
    assert tests_bead.title == "Add tests for make_token"
    assert not Bead.objects.filter(rig=town["frontend"]).exists()
    assert K.ASSIGNED in inbox(town["docs"])
    cascade_of(mr)  # the same landing analysed twice does not duplicate work
    assert Bead.objects.filter(discovered_from_merge_request=mr).count() == 2


def test_requirements_change_reaches_everyone(town):
    api = edit(town["api"], "requirements.txt", "django==5.2\nrequests==2.32\n")
    mr = land(api)
    cascade_of(mr)
    for name in ("frontend", "tests", "docs"):
        note = inbox(town[name])[K.DEPENDENCIES_CHANGED]
        assert "requirements.txt" in note.summary and "reinstall" in note.summary
    assert not Notification.objects.filter(rig=town["api"]).exists()  # not the source itself


def test_overlap_radar_fires_before_any_merge(town):
    edit(town["api"], "auth/tokens.py", TOKENS_V2)
    frontend = edit(town["frontend"], "auth/tokens.py", "def make_token(user):\n    return 1\n")
    overlap.cascade_overlap(rig_id=frontend.id)  # the task frontend's sync enqueued
    assert not MergeRequest.objects.exists()
    mine = Notification.objects.get(rig=frontend, kind=K.OVERLAP, state="open")
    theirs = Notification.objects.get(rig=town["api"], kind=K.OVERLAP, state="open")
    assert mine.changes["rig"] == "api" and theirs.changes["rig"] == "frontend"
    assert "Overlap with api" in mine.summary
    assert "will conflict in auth/tokens.py line 2" in mine.summary
    assert "Overlap with frontend" in theirs.summary
    # Both now edit the same file (before, api only touched what frontend watches).
    assert theirs.changes["same_files"] == mine.changes["same_files"] == ["auth/tokens.py"]


def test_overlap_on_watched_paths(town):
    # docs edits nothing the others touch; tests watch auth/, which api edits.
    api = edit(town["api"], "auth/helpers.py", "def helper():\n    pass\n")
    overlap.cascade_overlap(rig_id=api.id)  # the task api's sync enqueued
    assert K.OVERLAP in inbox(town["tests"]) and K.OVERLAP in inbox(town["frontend"])
    assert "changing files you watch" in inbox(town["tests"])[K.OVERLAP].summary
    assert K.OVERLAP not in inbox(town["docs"])
    assert K.OVERLAP not in inbox(api)  # the watchers are told, not the rig they watch


def test_identical_notifications_are_merged_not_repeated(town):
    api = edit(town["api"], "auth/tokens.py", TOKENS_V2)
    mr = land(api)
    cascade_of(mr)
    cascade_of(mr)
    note = Notification.objects.get(rig=town["frontend"], kind=K.INTERFACE_CHANGED)
    assert note.occurrences == 2
    assert Notification.objects.filter(rig=town["frontend"], kind=K.INTERFACE_CHANGED).count() == 1


def test_depth_grows_along_a_chain(town):
    api = edit(town["api"], "auth/tokens.py", TOKENS_V2)
    cascade_of(land(api))
    first = inbox(town["frontend"])[K.INTERFACE_CHANGED]
    assert first.depth == 0
    # frontend answers the notification with its own change, which docs' watch covers.
    docs = town["docs"]
    Rig.objects.filter(pk=docs.pk).update(watch=["frontend/**"])
    frontend = Rig.objects.get(pk=town["frontend"].pk)
    with transaction.atomic():
        services.rig_heartbeat(rig=frontend)
    git.rebase_worktree(frontend.worktree_path, "main")
    frontend = edit(frontend, "frontend/app.js", "import { token } from '../auth' // v2\n")
    second_mr = land(frontend)
    cascade_of(second_mr)
    answer = inbox(Rig.objects.get(pk=docs.pk))[K.INTERFACE_CHANGED]
    assert answer.cascade == first.cascade
    assert answer.depth == 1


def test_merge_conflict_notifies_and_queues_a_fix(town):
    api = edit(town["api"], "auth/tokens.py", TOKENS_V2)
    frontend = edit(town["frontend"], "auth/tokens.py", "def make_token(user):\n    return 1\n")
    land(api)
    with transaction.atomic():
        mr = services.merge_request_create(
            repository=frontend.repository,
            source_branch=frontend.branch,
            target_branch="main",
            rig=frontend,
        )
    merge_queue.merge_queue_process(frontend.repository_id, "main")
    mr.refresh_from_db()
    assert mr.state == MergeRequest.State.CONFLICTED
    note = inbox(frontend)[K.MERGE_CONFLICTED]
    assert note.severity == "critical" and "auth/tokens.py" in note.summary
    assert mr.target_commit[:12] in note.action
    bead = Bead.objects.get(rig=frontend, discovered_from_merge_request=mr)
    assert bead.title == "Resolve merge conflicts in auth/tokens.py" and bead.priority == 0


def test_failed_gate_sends_the_log_tail(app_repo):
    repository = register(app_repo, gate_command="echo 'E   AssertionError: token'; exit 1")
    api = edit(rig(repository, "api"), "auth/tokens.py", TOKENS_V2)
    with transaction.atomic():
        services.merge_request_create(
            repository=repository, source_branch=api.branch, target_branch="main", rig=api
        )
    merge_queue.merge_queue_process(repository.id, "main")
    note = inbox(api)[K.GATE_FAILED]
    assert "AssertionError: token" in note.changes["log_tail"]


def test_auto_rebase_keeps_idle_clean_rigs_current(app_repo):
    """The cascade asks the rig's own operation (rigs.operations.rig_rebase_run): the rig's
    worktree moves under its lock and the move is recorded as a sync."""
    repository = register(app_repo, auto_rebase=True)
    api = edit(rig(repository, "api"), "auth/tokens.py", TOKENS_V2)
    idle = rig(repository, "idle")
    busy = edit(rig(repository, "busy"), "frontend/app.js", "app()\n")
    Rig.objects.filter(pk=busy.pk).update(state=Rig.State.WORKING)  # an agent is at work
    cascade_of(land(api))
    main = run_git(app_repo, "rev-parse", "main")
    # nothing to do, so nothing to read: the rebased rig gets no notice
    assert K.BASE_MOVED not in inbox(idle)
    assert run_git(Path(idle.worktree_path), "rev-parse", "HEAD") == main
    idle.refresh_from_db()
    assert (idle.head_commit, idle.target_commit, idle.behind) == (main, main, 0)
    assert "rebased" not in inbox(busy)[K.BASE_MOVED].summary
    assert run_git(Path(busy.worktree_path), "rev-parse", "HEAD") == busy.head_commit


def test_auto_rebase_is_off_unless_the_repository_allows_it(town):
    idle = town["docs"]
    cascade_of(land(edit(town["api"], "auth/tokens.py", TOKENS_V2)))
    assert "behind" in inbox(idle)[K.BASE_MOVED].summary
    assert run_git(Path(idle.worktree_path), "rev-parse", "HEAD") == idle.head_commit


def test_cascades_are_policy_only():
    """The cascades app decides who is told what; it reads the landed change through
    rigs.landing and never runs git or reaches a worktree itself."""
    import ast

    package = Path(cascades.__file__).parent
    for module in sorted(package.glob("*.py")):
        tree = ast.parse(module.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}
        forbidden = {
            name
            for name in imported
            if name.startswith(("rigs.git", "subprocess", "git.", "common.process"))
        }
        assert not forbidden, f"{module.name} imports {sorted(forbidden)}"
        text = module.read_text()
        assert "worktree_path" not in text, f"{module.name} reaches a worktree"


def test_cascade_runs_in_the_worker_after_a_landing(town, celery_worker):
    api = edit(town["api"], "auth/tokens.py", TOKENS_V2)
    with transaction.atomic():
        services.merge_request_create(
            repository=api.repository, source_branch=api.branch, target_branch="main", rig=api
        )
    wait_for(
        lambda: Notification.objects.filter(rig=town["tests"], kind=K.INTERFACE_CHANGED).exists(),
        timeout=60,
        message="interface-changed notification from the worker",
    )
    assert BeadDependency.objects.count() == 0  # follow-ups link the MR, not other beads
    assert Bead.objects.filter(rig=town["docs"]).exists()


def test_bulk_send_matches_one_by_one(town):
    """The cascade's bulk path dedupes like `notification_send`: against unacked ones in the
    database and within the batch, and pushes one event per notification sent."""
    from events.models import Event
    from notifications.services import notifications_send_many

    frontend, docs = town["frontend"], town["docs"]
    item = {"kind": K.INFO, "severity": "info", "summary": "hello", "convoy_id": None}
    with transaction.atomic():
        first = notifications_send_many([{"rig": frontend, **item}])
    before = Event.objects.filter(kind__startswith="notification.").count()
    with transaction.atomic():
        again = notifications_send_many(
            [{"rig": frontend, **item}, {"rig": docs, **item}, {"rig": docs, **item}]
        )
    assert again[0].pk == first[0].pk
    assert Notification.objects.get(pk=first[0].pk).occurrences == 2
    docs_notes = Notification.objects.filter(rig=docs, kind=K.INFO)
    assert docs_notes.count() == 1 and docs_notes.get().occurrences == 2
    assert Event.objects.filter(kind__startswith="notification.").count() == before + 3


def test_current_legs_of_many_rigs_in_bounded_queries(django_assert_num_queries):
    """The cascade reads every rig's leg and its dependencies' scopes: no query per rig."""
    from cascades.watch import rig_watch_patterns
    from convoys.selectors import rigs_current_legs
    from tests import factories

    convoy = factories.convoy()
    api = factories.leg(convoy=convoy, key="api", scope=["auth/**"])
    rigs = []
    for i in range(5):
        r = factories.rig(repository=convoy.repository)
        leg = factories.leg(convoy=convoy, key=f"ui{i}", rig=r)
        leg.depends_on.add(api)
        rigs.append(r)
    with django_assert_num_queries(2):
        legs = rigs_current_legs(r.id for r in rigs)
        patterns = [rig_watch_patterns(r, legs.get(r.id)) for r in rigs]
    assert patterns == [["auth/**"]] * 5
