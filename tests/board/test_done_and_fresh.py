"""The board's side of "done means done" and "fresh facts" (issue 16, parts 5 and 6): a merged
rig offers no Request merge or Launch agent, Request merge shows the service's refusal and has
a force checkbox, the rig page and the convoy page's rig rows show ahead/behind read from git
(in a bounded number of git calls), and a landed leg shows where it landed."""

import importlib
import re
from pathlib import Path

import pytest
from django.core.cache import cache

from convoys import services as convoy_services
from convoys.models import Convoy, Leg
from rigs.models import MergeRequest, Rig
from tests import factories
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}
run_module = importlib.import_module("rigs.git.run")


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()


@pytest.fixture
def git_calls(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = run_module._execute

    def spy(cwd, args, *rest, **kw):
        calls.append(str(args[0]))
        return real(cwd, args, *rest, **kw)

    monkeypatch.setattr(run_module, "_execute", spy)
    return calls


@pytest.fixture
def scene(tmp_path):
    """A real repository and three rigs with real worktrees working the legs of one convoy."""
    path = tmp_path / "app"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    commit_file(path, "README.md", "# app\n", "initial")
    repository = factories.repository(name="app", path=str(path))
    convoy = factories.convoy(repository=repository, title="Auth", state=Convoy.State.LAUNCHED)
    rigs = {}
    for n, slug in enumerate(["api", "ui", "docs"]):
        worktree = tmp_path / "worktrees" / slug
        run_git(path, "worktree", "add", "-q", "-b", f"rig/{slug}", str(worktree), "main")
        rig = factories.rig(
            repository=repository,
            slug=slug,
            state=Rig.State.WORKING,
            worktree_path=str(worktree),
            agent=factories.agent(runtime_command="my-agent"),
        )
        factories.leg(convoy=convoy, key=slug, rig=rig, state=Leg.State.WORKING, position=n)
        rigs[slug] = rig
    return {"path": path, "convoy": convoy, "rigs": rigs}


def land_api(scene) -> MergeRequest:
    """Rig api's leg landed: merged, its merge commit on main."""
    rig = scene["rigs"]["api"]
    commit = run_git(scene["path"], "rev-parse", "main")
    mr = factories.merge_request(rig=rig, state=MergeRequest.State.MERGED, merge_commit=commit)
    Leg.objects.filter(rig=rig).update(state=Leg.State.LANDED, landed_merge_request=mr)
    Rig.objects.filter(pk=rig.pk).update(state=Rig.State.MERGED)
    return mr


def test_a_merged_rigs_page_offers_no_merge_and_no_launch(operator_client, scene):
    mr = land_api(scene)
    rig = scene["rigs"]["api"]
    html = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert "Request merge" not in html and 'id="request-merge"' not in html
    assert 'id="launch-agent"' not in html
    assert 'id="work-finished"' in html
    assert f"landed in <code>{mr.merge_commit[:12]}</code>" in html
    assert "work is finished" in html  # why Launch is not offered
    # and the POST endpoints refuse it too, by the same rules
    response = operator_client.post(f"/rigs/{rig.id}/merge/", **JSON)
    assert response.status_code == 409 and response.json()["error"]["code"] == "work_finished"
    response = operator_client.post(f"/rigs/{rig.id}/launch/", **JSON)
    assert response.status_code == 409 and response.json()["error"]["code"] == "work_finished"
    # a working rig next to it still offers both
    other = operator_client.get(f"/rigs/{scene['rigs']['ui'].id}/").content.decode()
    assert 'id="request-merge"' in other and 'id="launch-agent"' in other
    assert 'name="force"' in other  # the operator's force checkbox


def test_request_merge_shows_the_refusal_and_force_overrides_it(operator_client, scene):
    rig = scene["rigs"]["ui"]
    bead = convoy_services.bead_create(title="Style the login form", rig=rig)
    response = operator_client.post(f"/rigs/{rig.id}/merge/", **JSON)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "open_work"
    assert f'{bead.short_id} "Style the login form" (open)' in error["message"]
    page = operator_client.post(f"/rigs/{rig.id}/merge/", follow=True).content.decode()
    assert "still has work to do" in page and bead.short_id in page
    assert not MergeRequest.objects.filter(rig=rig).exists()
    response = operator_client.post(f"/rigs/{rig.id}/merge/", {"force": "maybe"}, **JSON)
    assert response.status_code == 400 and response.json()["error"]["field"] == "force"
    assert not MergeRequest.objects.filter(rig=rig).exists()
    response = operator_client.post(f"/rigs/{rig.id}/merge/", {"force": "1"}, **JSON)
    assert response.status_code == 200, response.content
    assert "(forced over open work)" in response.json()["message"]
    assert MergeRequest.objects.get(rig=rig).forced


def test_the_rig_page_reads_ahead_and_behind_from_git(operator_client, scene, git_calls):
    rig = scene["rigs"]["ui"]
    head = commit_file(Path(rig.worktree_path), "ui/form.js", "form()\n", "form")
    commit_file(scene["path"], "CHANGELOG.md", "moved\n", "main moves")
    html = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert f"<code>{head[:10]}</code>" in html
    facts = re.search(r"<dt>Ahead / behind</dt><dd[^>]*>(.*?)</dd>", html, re.S).group(1)
    assert "↑1" in facts and "↓1" in facts and "read from git just now" in facts
    assert "not read yet (never synced)" in html  # dirty: never "as of the last sync"
    assert git_calls.count("for-each-ref") == 1 and git_calls.count("rev-list") == 1


def test_the_convoy_page_rows_are_fresh_in_bounded_git_calls(operator_client, scene, git_calls):
    rigs = scene["rigs"]
    commit_file(Path(rigs["ui"].worktree_path), "ui/form.js", "form()\n", "form")
    commit_file(Path(rigs["docs"].worktree_path), "docs/auth.md", "auth\n", "docs")
    commit_file(Path(rigs["docs"].worktree_path), "docs/more.md", "more\n", "more docs")
    mr = land_api(scene)
    commit_file(scene["path"], "CHANGELOG.md", "moved\n", "main moves")
    Rig.objects.filter(pk=rigs["api"].pk).update(behind=21)  # a stale, recorded count
    git_calls.clear()
    html = operator_client.get(f"/convoys/{scene['convoy'].id}/").content.decode()

    def row(slug: str) -> str:
        leg = Leg.objects.get(rig=rigs[slug])
        return re.search(rf'<tr id="leg-{leg.id}".*?</tr>', html, re.S).group(0)

    assert f"landed in <code>{mr.merge_commit[:12]}</code>" in row("api")
    assert "↓" not in row("api")  # a landed leg: where it landed, no behind count
    assert re.search(r'class="ahead"[^>]*>↑1<', row("ui"))
    assert re.search(r'class="behind"[^>]*>↓1<', row("ui"))
    assert re.search(r'class="ahead"[^>]*>↑2<', row("docs"))
    # one for-each-ref for the page, one rev-list per distinct (head, target) pair: 3 rigs
    assert git_calls.count("for-each-ref") == 1
    assert git_calls.count("rev-list") <= len(rigs)
    assert set(git_calls) <= {"for-each-ref", "rev-list"}
    git_calls.clear()
    operator_client.get(f"/convoys/{scene['convoy'].id}/live/")
    assert git_calls == ["for-each-ref"]  # the counts of two commits are cached


def test_a_merged_rig_with_an_open_leg_shows_no_orange_behind_count(operator_client, scene):
    """(A merged rig handed a new leg: its counts show, but not as an alarm.)"""
    rig = scene["rigs"]["docs"]
    Rig.objects.filter(pk=rig.pk).update(state=Rig.State.MERGED)
    commit_file(scene["path"], "CHANGELOG.md", "moved\n", "main moves")
    html = operator_client.get(f"/convoys/{scene['convoy'].id}/").content.decode()
    leg = Leg.objects.get(rig=rig)
    docs_row = re.search(rf'<tr id="leg-{leg.id}".*?</tr>', html, re.S).group(0)
    assert 'class="behind"' not in docs_row and "↓1" in docs_row
