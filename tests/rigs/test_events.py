"""Every rigs service appends its own events, exactly these, in its own transaction.

Rigs knows nothing of convoys: its events carry the repository and the rig (a convoy's page
listens to its legs' rig groups), never a convoy."""

import contextlib

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from common.errors import Refusal
from events.models import Event
from rigs import services
from rigs.models import MergeRequest, Rig
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _only_rigs_writes_rig_events(monkeypatch):
    """Until convoys/receivers.py stops appending rig.* / merge_request.* events itself (rigs'
    services append them now), mute its copies so that these tests see what rigs appends.
    Once receivers no longer import event_append this does nothing; then delete it."""
    with contextlib.suppress(ImportError):
        from convoys import receivers

        if hasattr(receivers, "event_append"):
            monkeypatch.setattr(receivers, "event_append", lambda *args, **kwargs: None)


@contextlib.contextmanager
def appended():
    """Collects (kind, payload, repository, convoy, rig) of the events appended inside."""
    last = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    found: list[tuple] = []
    yield found
    found.extend(
        Event.objects.filter(id__gt=last)
        .order_by("id")
        .values_list("kind", "payload", "repository_id", "convoy_id", "rig_id")
    )


def test_rig_request_appends_its_state(settings, tmp_path):
    settings.GASTOWN_WORKTREE_ROOT = tmp_path
    repository = factories.repository()
    with appended() as events, transaction.atomic():
        rig = services.rig_request(repository=repository, slug="api")
    assert events == [
        (
            "rig.state",
            {
                "rig": rig.id,
                "slug": "api",
                "from": "",
                "to": "requested",
                "reason": "requested",
                "progress": 0,
                "label": "",
            },
            repository.id,
            None,
            rig.id,
        )
    ]


def test_rig_transition_and_progress():
    rig = factories.rig()
    with appended() as events:
        services.rig_transition(
            rig=rig, to=Rig.State.PROVISIONING, reason="go", progress=10, progress_label="out"
        )
        services.rig_progress_set(rig=rig, progress=60, label="copying files")
    assert events == [
        (
            "rig.state",
            {
                "rig": rig.id,
                "slug": rig.slug,
                "from": "requested",
                "to": "provisioning",
                "reason": "go",
                "progress": 10,
                "label": "out",
            },
            rig.repository_id,
            None,
            rig.id,
        ),
        (
            "rig.progress",
            {"rig": rig.id, "progress": 60, "label": "copying files"},
            rig.repository_id,
            None,
            rig.id,
        ),
    ]


def test_sync_record_appends_a_branch_move_only_when_the_head_moved():
    rig = factories.rig(state=Rig.State.READY, head_commit="a" * 40)
    record = {
        "target_commit": "c" * 40,
        "ahead": 1,
        "behind": 0,
        "dirty": False,
        "changed_files": [{"path": "x", "added": 1, "deleted": 0, "status": "M"}],
    }
    with appended() as events:
        services.rig_sync_record(rig=rig, head_commit="b" * 40, **record)
        services.rig_sync_record(rig=rig, head_commit="b" * 40, **record)  # nothing moved
    assert events == [
        (
            "rig.branch",
            {
                "rig": rig.id,
                "slug": rig.slug,
                "from": "a" * 40,
                "to": "b" * 40,
                "ahead": 1,
                "behind": 0,
                "files": 1,
            },
            rig.repository_id,
            None,
            rig.id,
        )
    ]


def test_rig_update_saves_validates_and_names_the_fields():
    rig = factories.rig(state=Rig.State.WORKING)
    with appended() as events:
        services.rig_update(rig=rig, role="docs", notify_level="muted", scope=["docs/**"])
        services.rig_update(rig=rig, role="docs")  # no change, no event
    rig.refresh_from_db()
    assert (rig.role, rig.notify_level, rig.scope) == ("docs", "muted", ["docs/**"])
    assert events == [
        (
            "rig.updated",
            {"rig": rig.id, "slug": rig.slug, "fields": ["notify_level", "role", "scope"]},
            rig.repository_id,
            None,
            rig.id,
        )
    ]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"slug": "other"}, "slug"),
        ({"state": "merged"}, "state"),
        ({"notify_level": "loud"}, "notify_level"),
        ({"scope": ["/etc/**"]}, "scope"),
        ({"role": "x" * 41}, "role"),
    ],
)
def test_rig_update_refuses_bad_or_fixed_fields(fields, field):
    rig = factories.rig()
    with appended() as events, pytest.raises(ValidationError) as refused, transaction.atomic():
        services.rig_update(rig=rig, **fields)
    assert field in refused.value.message_dict
    assert events == []
    fresh = Rig.objects.get(pk=rig.pk)
    assert (fresh.slug, fresh.state, fresh.notify_level) == (rig.slug, "requested", "all")


def test_merge_request_create_appends_the_request_and_the_rigs_move():
    rig = factories.rig(state=Rig.State.WORKING, head_commit="b" * 40)
    with appended() as events, transaction.atomic():
        mr = services.merge_request_create(
            repository=rig.repository,
            source_branch=rig.branch,
            target_branch="main",
            rig=rig,
        )
    assert events == [
        (
            "merge_request.state",
            {"merge_request": mr.id, "from": "", "to": "queued", "forced": False},
            rig.repository_id,
            None,
            rig.id,
        ),
        (
            "rig.state",
            {
                "rig": rig.id,
                "slug": rig.slug,
                "from": "working",
                "to": "merging",
                "reason": f"merge request {mr.id}",
                "progress": 0,
                "label": "",
            },
            rig.repository_id,
            None,
            rig.id,
        ),
    ]


def test_merge_request_transition_and_a_branch_landing():
    """A request without a rig (a convoy's integration branch) has only its repository."""
    repository = factories.repository()
    mr = MergeRequest.objects.create(
        repository=repository, source_branch="convoy/x", target_branch="main", source_commit="a"
    )
    with appended() as events:
        services.merge_request_transition(merge_request=mr, to=MergeRequest.State.CHECKING)
        services.merge_request_cancel(merge_request=mr)
    assert events == [
        (
            "merge_request.state",
            {"merge_request": mr.id, "from": "queued", "to": "checking"},
            repository.id,
            None,
            None,
        ),
        (
            "merge_request.state",
            {"merge_request": mr.id, "from": "checking", "to": "cancelled"},
            repository.id,
            None,
            None,
        ),
    ]


def test_merge_request_prioritize_only_while_queued():
    mr = factories.merge_request()
    with appended() as events:
        services.merge_request_prioritize(merge_request=mr, priority=0)
        services.merge_request_prioritize(merge_request=mr, priority=0)  # no change
    assert MergeRequest.objects.get(pk=mr.pk).priority == 0
    assert events == [
        (
            "merge_request.updated",
            {"merge_request": mr.id, "fields": ["priority"], "priority": 0},
            mr.repository_id,
            None,
            mr.rig_id,
        )
    ]
    MergeRequest.objects.filter(pk=mr.pk).update(state=MergeRequest.State.TESTING)
    with appended() as events, pytest.raises(Refusal) as refused:
        services.merge_request_prioritize(merge_request=mr, priority=3)
    assert refused.value.field == "priority" and "testing" in refused.value.message
    assert events == [] and MergeRequest.objects.get(pk=mr.pk).priority == 0


def test_repository_register_and_update(git_repo):
    with appended() as events, transaction.atomic():
        repository = services.repository_register(name="app", path=str(git_repo))
    assert events == [
        ("repository.registered", {"repository": repository.id, "name": "app"}, repository.id,
         None, None)
    ]  # fmt: skip
    with appended() as events:
        services.repository_update(repository=repository, gate_command="make test", batch_size=2)
    repository.refresh_from_db()
    assert (repository.gate_command, repository.batch_size) == ("make test", 2)
    assert events == [
        (
            "repository.updated",
            {"repository": repository.id, "name": "app", "fields": ["batch_size", "gate_command"]},
            repository.id,
            None,
            None,
        )
    ]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"path": "/etc"}, "path"),
        ({"target_branch": "nope"}, "target_branch"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_repository_update_refuses(git_repo, fields, field):
    with transaction.atomic():
        repository = services.repository_register(name="app", path=str(git_repo))
    with appended() as events, pytest.raises(ValidationError) as refused, transaction.atomic():
        services.repository_update(repository=repository, **fields)
    assert field in refused.value.message_dict and events == []


def test_agent_events_never_carry_the_token_or_command():
    agent, _ = services.agent_create(name="claude-1")
    with appended() as events:
        services.agent_update(agent=agent, runtime_command="claude -p hi", is_active=False)
        token = services.agent_rotate_token(agent=agent)
        services.agent_revoke_token(agent=agent)
    assert events == [
        (
            "agent.updated",
            {"agent": agent.id, "name": "claude-1", "fields": ["is_active", "runtime_command"]},
            None,
            None,
            None,
        ),
        ("agent.token", {"agent": agent.id, "name": "claude-1", "action": "rotated"}, None, None,
         None),
        ("agent.token", {"agent": agent.id, "name": "claude-1", "action": "revoked"}, None, None,
         None),
    ]  # fmt: skip
    assert token not in str(events) and "claude -p" not in str(events)


def test_teardown_refused_is_recorded_with_its_event():
    rig = factories.rig(state=Rig.State.WORKING, progress=100, progress_label="ready")
    with appended() as events:
        services.rig_teardown_refused_record(rig=rig, message="2 commits would be lost")
    assert Rig.objects.get(pk=rig.pk).failure_reason == "2 commits would be lost"
    assert events == [
        (
            "rig.progress",
            {"rig": rig.id, "progress": 100, "label": "teardown refused"},
            rig.repository_id,
            None,
            rig.id,
        )
    ]


def test_events_roll_back_with_a_refused_change():
    rig = factories.rig(state=Rig.State.ARCHIVED)
    with appended() as events, pytest.raises(Refusal), transaction.atomic():
        services.rig_transition(rig=rig, to=Rig.State.WORKING)
    assert events == []
