"""Done means done (issue 16, part 5) and fresh facts (part 6), through the API, on real git
repositories and worktrees: a merge request is refused while the leg has open work (`force`
overrides, recorded), a landed leg's beads cannot be claimed, a landed rig's briefing says to
stop, and ahead/behind are read from git when asked."""

from pathlib import Path

import pytest
from django.core.cache import cache
from django.utils import timezone

from convoys import services
from convoys.models import Bead, Convoy, Leg
from events.models import Event
from rigs.models import MergeRequest, Rig
from tests import factories
from tests.api.conftest import error_of
from tests.conftest import git as run_git
from tests.convoys.helpers import land
from tests.rigs.helpers import commit_file

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()


@pytest.fixture
def scene(tmp_path, make_agent):
    """A real repository on `main`, an agent with a rig (a real worktree on `rig/api`) working
    leg `api` of the launched convoy "Build auth"."""
    path = tmp_path / "app"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    commit_file(path, "README.md", "# app\n", "initial")
    repository = factories.repository(name="app", path=str(path))
    worktree = tmp_path / "worktrees" / "api"
    run_git(path, "worktree", "add", "-q", "-b", "rig/api", str(worktree), "main")
    agent, client = make_agent("claude-api")
    rig = factories.rig(
        repository=repository,
        slug="api",
        agent=agent,
        state=Rig.State.WORKING,
        worktree_path=str(worktree),
    )
    convoy = services.convoy_create(
        title="Build auth",
        repository=repository,
        slug="auth",
        legs=[{"key": "api", "title": "API endpoints", "rig": rig.id}],
    )
    services.convoy_launch(convoy=convoy)
    return {"path": path, "worktree": worktree, "rig": rig, "client": client, "convoy": convoy}


def merge(client, rig, **body):
    return client.post(f"/api/v1/rigs/{rig.id}/merge-requests/", body, format="json")


def land_leg(rig: Rig) -> MergeRequest:
    """The rig's merge landed (as the merge queue records it): leg and convoy land."""
    mr = land(rig=rig, target_branch="main")
    MergeRequest.objects.filter(pk=mr.pk).update(merge_commit="1a2b3c4d5e6f7a8b9c0d" * 2)
    Rig.objects.filter(pk=rig.pk).update(state=Rig.State.MERGED)
    rig.refresh_from_db()
    return mr


# --- 409 open_work ---------------------------------------------------------------------------


def test_merge_is_refused_while_the_leg_has_open_beads(scene):
    rig, client = scene["rig"], scene["client"]
    endpoint = services.bead_create(title="Write the endpoint", rig=rig, priority=0)
    docs = services.bead_create(title="Document it", rig=rig, priority=1)
    assert endpoint.leg.key == "api"  # a bead made in the rig belongs to its current leg
    services.bead_claim(bead=endpoint, agent=rig.agent)
    services.bead_close(bead=factories.bead(rig=rig, title="Old and done"), reason="done")

    response = merge(client, rig)
    assert response.status_code == 409
    error = error_of(response)
    assert (error["code"], error["field"]) == ("open_work", "force")
    message = error["message"]
    assert f'{endpoint.short_id} "Write the endpoint" (in progress)' in message
    assert f'{docs.short_id} "Document it" (open)' in message
    assert "2 open or in-progress bead(s) on leg `api`" in message
    assert "Old and done" not in message
    assert "its worktree is clean (read from git just now)" in message
    assert not MergeRequest.objects.exists()
    rig.refresh_from_db()
    assert rig.state == Rig.State.WORKING  # nothing moved


def test_merge_is_refused_while_the_worktree_is_dirty_read_now(scene):
    rig, client, worktree = scene["rig"], scene["client"], scene["worktree"]
    commit_file(worktree, "api/views.py", "def login():\n    return 1\n")
    (worktree / "api" / "views.py").write_text("def login():\n    return 2  # not committed\n")
    assert rig.dirty is False and rig.last_synced_at is None  # no sync saw it
    response = merge(client, rig)
    assert response.status_code == 409
    message = error_of(response)["message"]
    assert "its worktree has uncommitted changes (read from git just now)" in message
    assert "bead" not in message.split("still has work to do:")[1].split(";")[0]
    assert "Commit your changes" in message
    run_git(worktree, "commit", "-qam", "finish")
    assert merge(client, rig).status_code == 201


def test_a_missing_worktree_falls_back_to_the_recorded_dirty_state(scene):
    rig, client = scene["rig"], scene["client"]
    synced = timezone.now().replace(hour=8, minute=15)
    Rig.objects.filter(pk=rig.pk).update(
        worktree_path=str(scene["worktree"]) + "-gone", dirty=True, last_synced_at=synced
    )
    rig.refresh_from_db()
    response = merge(client, rig)
    assert response.status_code == 409
    assert "uncommitted changes (as of the last sync at 08:15 UTC)" in error_of(response)["message"]
    Rig.objects.filter(pk=rig.pk).update(dirty=False)
    assert merge(client, rig).status_code == 201


def test_force_lands_it_as_it_is_and_is_recorded(scene):
    rig, client, worktree = scene["rig"], scene["client"], scene["worktree"]
    services.bead_create(title="Write the endpoint", rig=rig)
    (worktree / "wip.txt").write_text("half done\n")
    response = merge(client, rig, force=True)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["forced"] is True
    mr = MergeRequest.objects.get(pk=body["id"])
    assert mr.forced and mr.state == MergeRequest.State.QUEUED
    created = Event.objects.get(kind="merge_request.state", payload__merge_request=mr.id)
    assert created.payload == {"merge_request": mr.id, "from": "", "to": "queued", "forced": True}
    assert client.get(f"/api/v1/merge-requests/{mr.id}/").json()["forced"] is True
    response = merge(client, rig, force="maybe")
    assert response.status_code == 400 and error_of(response)["field"] == "force"


def test_a_clean_leg_lands_without_force(scene):
    rig, client = scene["rig"], scene["client"]
    bead = services.bead_create(title="Write the endpoint", rig=rig)
    services.bead_close(bead=bead, reason="done")
    response = merge(client, rig)
    assert response.status_code == 201 and response.json()["forced"] is False


# --- a landed leg ----------------------------------------------------------------------------


def test_a_landed_legs_bead_cannot_be_claimed(scene):
    rig, client = scene["rig"], scene["client"]
    left = services.bead_create(title="Left open", rig=rig)
    land_leg(rig)
    leg = Leg.objects.get(rig=rig)
    assert leg.state == Leg.State.LANDED
    assert Convoy.objects.get(pk=scene["convoy"].pk).state == Convoy.State.LANDED
    response = client.post(f"/api/v1/beads/{left.short_id}/claim/")
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "work_finished"
    assert error["message"].startswith(
        f"{left.short_id} cannot be claimed: leg `api` of convoy 'Build auth' landed in "
        "1a2b3c4d5e6f (merge request #"
    )
    assert Bead.objects.get(pk=left.pk).status == Bead.Status.OPEN
    # nor is it ready, and the finished rig takes no new work
    ready = client.get(f"/api/v1/beads/?rig={rig.id}&ready=true").json()
    assert ready["count"] == 0
    response = client.post("/api/v1/beads/", {"title": "Late work", "rig": rig.id}, format="json")
    assert response.status_code == 409 and error_of(response)["code"] == "work_finished"
    assert "takes no new work" in error_of(response)["message"]
    assert not Bead.objects.filter(title="Late work").exists()
    # a leftover can be closed, not revived
    patch = client.patch(f"/api/v1/beads/{left.short_id}/", {"status": "blocked"}, format="json")
    assert patch.status_code == 409 and error_of(patch)["code"] == "work_finished"
    closed = client.patch(f"/api/v1/beads/{left.short_id}/", {"status": "closed"}, format="json")
    assert closed.status_code == 200, closed.content
    reopen = client.patch(f"/api/v1/beads/{left.short_id}/", {"status": "open"}, format="json")
    assert reopen.status_code == 409 and "cannot be open" in error_of(reopen)["message"]


def test_a_bead_of_an_ended_convoy_or_a_cancelled_leg_cannot_be_claimed(make_agent):
    agent, client = make_agent()
    repository = factories.repository()
    rig = factories.rig(repository=repository, agent=agent, state=Rig.State.WORKING)
    dropped = factories.convoy(repository=repository, title="Dropped", state="cancelled")
    pooled = factories.bead(convoy=dropped, title="In the pool")
    live = factories.convoy(repository=repository, title="Live", state=Convoy.State.LAUNCHED)
    leg = factories.leg(convoy=live, key="cut", rig=rig, state=Leg.State.CANCELLED)
    on_cancelled_leg = factories.bead(rig=rig, leg=leg)
    for bead, why in [
        (pooled, "its convoy 'Dropped' is cancelled"),
        (on_cancelled_leg, "leg `cut` of convoy 'Live' was cancelled"),
    ]:
        response = client.post(f"/api/v1/beads/{bead.short_id}/claim/")
        assert response.status_code == 409, response.json()
        error = error_of(response)
        assert error["code"] == "work_finished" and why in error["message"], error
    assert not Bead.objects.filter(status=Bead.Status.IN_PROGRESS).exists()


def test_a_landed_rig_is_refused_a_merge_request(scene):
    rig, client = scene["rig"], scene["client"]
    land_leg(rig)
    response = merge(client, rig, force=True)  # force is about open work, not finished work
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "work_finished"
    assert (
        "rig api's work is finished: leg `api` of convoy 'Build auth' landed in"
        in (error["message"])
    )


def test_a_landed_rigs_briefing_says_so_first_and_to_stop(scene):
    rig, client = scene["rig"], scene["client"]
    services.bead_create(title="Left open", rig=rig)
    mr = land_leg(rig)
    response = client.get("/api/v1/me/prime/")
    assert response.status_code == 200
    text = response.content.decode()
    body = text.split("\n", 2)[2]  # after the title line and its blank line
    assert body.startswith("## Stop: your work in this rig is finished\n")
    assert (
        f"Your leg `api` of convoy 'Build auth' landed in 1a2b3c4d5e6f (merge request #{mr.id}) "
        "on `main`. Your work in this rig is finished: stop here." in text
    )
    for gone in ("gt claim", "Ready beads", "Left open", "behind"):
        assert gone not in text, gone
    me = client.get("/api/v1/me/").json()
    finished = me["rigs"][0]["work_finished"]
    assert finished["landed"] and finished["leg_key"] == "api"
    assert finished["merge_request"] == mr.id and finished["merge_commit"].startswith("1a2b3c")
    assert me["assignment"] is None


# --- fresh facts -----------------------------------------------------------------------------


def rev_list(path: Path, branch: str) -> tuple[int, int]:
    behind, ahead = run_git(path, "rev-list", "--left-right", "--count", f"main...{branch}").split()
    return int(ahead), int(behind)


def test_me_and_prime_read_ahead_and_behind_from_git_with_no_sync(scene):
    rig, client, path, worktree = scene["rig"], scene["client"], scene["path"], scene["worktree"]
    commit_file(worktree, "api/views.py", "def login():\n    return 1\n", "login")
    commit_file(worktree, "api/urls.py", "urls = []\n", "urls")
    commit_file(path, "CHANGELOG.md", "main moved\n", "main moves on")
    head = run_git(worktree, "rev-parse", "HEAD")
    assert rev_list(path, "rig/api") == (2, 1)

    me = client.get("/api/v1/me/").json()["rigs"][0]
    assert (me["ahead"], me["behind"]) == rev_list(path, "rig/api")
    assert me["head_commit"] == head and me["counts_fresh"] is True
    assert me["counts_as_of"] == "read from git just now"
    assert me["last_synced_at"] is None and me["dirty_as_of"] == "never synced"

    text = client.get("/api/v1/me/prime/").content.decode()
    assert f"- commits: 2 ahead, 1 behind `main` (head {head[:10]}, read from git just now)" in text
    assert "as of the last sync" not in text  # there was none
    assert "uncommitted changes: not read yet (never synced" in text

    commit_file(worktree, "api/more.py", "x = 1\n", "one more")
    me = client.get("/api/v1/me/").json()["rigs"][0]
    assert (me["ahead"], me["behind"]) == rev_list(path, "rig/api") == (3, 1)
    rig.refresh_from_db()
    assert (rig.ahead, rig.behind) == (0, 0)  # nothing recorded: read, not synced


def test_unreadable_git_falls_back_to_the_last_sync_and_says_when(make_agent):
    agent, client = make_agent()
    synced = timezone.now().replace(hour=7, minute=5)
    factories.rig(
        agent=agent, state=Rig.State.WORKING, ahead=4, behind=2, head_commit="c" * 40,
        last_synced_at=synced,
    )  # fmt: skip
    me = client.get("/api/v1/me/").json()["rigs"][0]
    assert (me["ahead"], me["behind"], me["counts_fresh"]) == (4, 2, False)
    assert me["counts_as_of"] == "as of the last sync at 07:05 UTC"
    text = client.get("/api/v1/me/prime/").content.decode()
    assert "4 ahead, 2 behind `main` (head cccccccccc, as of the last sync at 07:05 UTC)" in text
