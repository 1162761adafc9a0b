"""Who a cascade tells, and notices as states, on real repositories: a finished rig is told
nothing; a behind rig has one "base moved" notice that counts; what a rig was told accumulates
until its landing answers it; a rebase resolves "base moved"."""

from pathlib import Path

import pytest
from django.db import transaction

from cascades.selectors import cascade_audience
from convoys import services as convoy_services
from notifications.models import Notification
from rigs import operations
from rigs.models import Rig
from tests.cascades import test_cascades
from tests.cascades.test_cascades import TOKENS_V2, cascade_of, edit, land, rig
from tests.conftest import git as run_git
from tests.rigs.helpers import register

pytestmark = pytest.mark.django_db(transaction=True)
app_repo = test_cascades.app_repo  # the sample repository fixture
K = Notification.Kind


def open_notices(r: Rig) -> list[Notification]:
    return list(Notification.objects.filter(rig=r, state="open").order_by("id"))


def test_a_merged_rig_is_told_nothing_when_the_next_change_lands(app_repo):
    repository = register(app_repo)
    done = edit(rig(repository, "done", watch=["auth/**"]), "docs/done.md", "done\n")
    cascade_of(land(done))
    done.refresh_from_db()
    assert done.state == Rig.State.MERGED
    before = Notification.objects.filter(rig=done).count()
    api = edit(rig(repository, "api"), "auth/tokens.py", TOKENS_V2)
    sent = cascade_of(land(api))
    assert done.id not in {n.rig_id for n in sent}
    assert Notification.objects.filter(rig=done).count() == before, list(
        Notification.objects.filter(rig=done).values_list("kind", "summary")
    )
    assert done.id not in {r.id for r, _ in cascade_audience(repository_id=repository.id)}


def test_a_finished_leg_is_told_nothing_and_a_new_leg_makes_the_rig_count_again(app_repo):
    repository = register(app_repo)
    worker = rig(repository, "worker")
    convoy = convoy_services.convoy_create(
        title="One", repository=repository, legs=[{"key": "one", "title": "One", "rig": worker}]
    )
    convoy_services.convoy_launch(convoy=convoy)
    assert worker.id in {r.id for r, _ in cascade_audience(repository_id=repository.id)}
    cascade_of(land(edit(worker, "docs/one.md", "one\n")))
    assert convoy.legs.get().state == "landed"
    assert worker.id not in {r.id for r, _ in cascade_audience(repository_id=repository.id)}
    assert open_notices(worker) == []  # what it was told is resolved: its work is done
    second = convoy_services.convoy_create(
        title="Two", repository=repository, legs=[{"key": "two", "title": "Two", "rig": worker}]
    )
    convoy_services.convoy_launch(convoy=second)
    assert worker.id in {r.id for r, _ in cascade_audience(repository_id=repository.id)}


def test_ten_landings_leave_one_base_notice_that_counts_them(app_repo):
    repository = register(app_repo)
    behind = rig(repository, "behind")
    api = rig(repository, "api")
    for n in range(10):
        cascade_of(land(edit(api, f"auth/module_{n}.py", f"VALUE = {n}\n")))
    [notice] = open_notices(behind)
    head = run_git(Path(behind.worktree_path), "rev-parse", "HEAD")
    distance = int(run_git(app_repo, "rev-list", "--count", f"{head}..main"))
    assert notice.kind == K.BASE_MOVED and notice.severity == "info"
    assert notice.changes["behind"] == distance >= 10
    assert f"{distance} commit(s) behind main" in notice.summary
    assert len(notice.revisions) == 9 and len(notice.changes["landings"]) == 10
    # It rebases: the sync finds it on top of main, and the notice is resolved.
    run_git(Path(behind.worktree_path), "rebase", "main")
    with transaction.atomic():
        operations.rig_sync_run(behind.id)
    notice.refresh_from_db()
    assert notice.state == "resolved" and "rebased" in notice.resolution


def test_interface_changes_accumulate_until_the_rig_lands(app_repo):
    repository = register(app_repo)
    frontend = rig(repository, "frontend", watch=["auth/**"])
    api = rig(repository, "api")
    cascade_of(land(edit(api, "auth/tokens.py", TOKENS_V2)))
    cascade_of(land(edit(api, "auth/session.py", "def open_session(user):\n    return 1\n")))
    [interface] = [n for n in open_notices(frontend) if n.kind == K.INTERFACE_CHANGED]
    assert [f["path"] for f in interface.changes["files"]] == ["auth/session.py", "auth/tokens.py"]
    assert interface.changes["symbols"] == {
        "auth/tokens.py": ["make_token"],
        "auth/session.py": ["open_session"],
    }
    assert "2 landings" in interface.summary and len(interface.changes["ranges"]) == 2
    assert "make_token" in interface.action and "open_session" in interface.action
    # The frontend acts on it and lands: what it was told is answered.
    cascade_of(land(edit(frontend, "frontend/app.js", "import { make_token } from '../auth'\n")))
    interface.refresh_from_db()
    assert interface.state == "resolved" and "landed" in interface.resolution
