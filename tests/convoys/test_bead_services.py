"""The bead services the API's views call in one step (`bead_create` with its edges,
`bead_edit`), with the exact events each appends; the bead write rule."""

import pytest
from django.core.exceptions import ValidationError

from common.errors import Refusal
from convoys import services
from convoys.models import Bead
from events.models import Event
from rigs.auth import AgentUser
from rigs.models import Rig
from rigs.permissions import may_write_bead
from tests import factories

pytestmark = pytest.mark.django_db


def events_after(after: int) -> list[tuple[str, dict]]:
    return [(e.kind, e.payload) for e in Event.objects.filter(pk__gt=after).order_by("id")]


def last() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


@pytest.fixture
def rig():
    return factories.rig(state=Rig.State.WORKING)


def test_bead_create_with_its_edges_in_one_transaction(rig):
    parent = services.bead_create(title="parent", rig=rig)
    waits = services.bead_create(title="waits", rig=rig)
    after = last()
    bead = services.bead_create(
        title="found", rig=rig, priority=1, blocks=[waits], discovered_from=parent
    )
    assert events_after(after) == [
        ("bead.created", {"bead": bead.short_id, "title": "found", "priority": 1}),
        (
            "bead.dependency_added",
            {"bead": waits.short_id, "depends_on": bead.short_id, "type": "blocks"},
        ),
        (
            "bead.dependency_added",
            {"bead": bead.short_id, "depends_on": parent.short_id, "type": "discovered-from"},
        ),
    ]


def test_bead_create_rolls_back_when_an_edge_is_refused(rig):
    other = services.bead_create(title="other", rig=rig)
    services.bead_dependency_add(bead=other, depends_on=services.bead_create(title="x", rig=rig))
    before, after = Bead.objects.count(), last()
    with pytest.raises(ValidationError):
        services.bead_create(title="dup", rig=rig, blocks=[other, other])  # a repeated edge
    assert Bead.objects.count() == before and events_after(after) == []


def test_bead_edit_updates_then_moves_the_status(rig):
    bead = services.bead_create(title="old", rig=rig)
    after = last()
    services.bead_edit(bead=bead, values={"title": "new"}, status="closed", close_reason="done")
    assert events_after(after) == [
        ("bead.updated", {"bead": bead.short_id, "title": "new", "fields": ["title"]}),
        (
            "bead.status",
            {"bead": bead.short_id, "title": "new", "from": "open", "to": "closed"},
        ),
    ]
    after = last()
    services.bead_edit(bead=bead, values={}, status="open")  # reopen
    assert events_after(after) == [
        ("bead.status", {"bead": bead.short_id, "title": "new", "from": "closed", "to": "open"}),
    ]
    after = last()
    with pytest.raises(ValidationError) as exc:
        services.bead_edit(bead=bead, values={}, status="in_progress")
    assert "claim" in exc.value.message_dict["status"][0]
    services.bead_edit(bead=bead, values={}, status="open")  # no change: no event
    assert events_after(after) == []


def test_dependency_remove_of_a_missing_edge_is_a_404_refusal(rig):
    a, b = services.bead_create(title="a", rig=rig), services.bead_create(title="b", rig=rig)
    with pytest.raises(Refusal) as exc:
        services.bead_dependency_remove(bead=a, depends_on=b)
    assert (exc.value.status, exc.value.code, exc.value.field) == (404, "not_found", "depends_on")


def test_may_write_bead(rig, django_user_model):
    owner = AgentUser(rig.agent)
    stranger = AgentUser(factories.agent(name="stranger"))
    in_rig = services.bead_create(title="mine", rig=rig)
    pool = services.bead_create(title="pool", repository=rig.repository)
    assert may_write_bead(owner, in_rig) and not may_write_bead(stranger, in_rig)
    assert not may_write_bead(owner, pool)  # a pool bead: only its holder
    pool.assignee = stranger.agent
    assert may_write_bead(stranger, pool)
    person = django_user_model.objects.create_user("no-role")
    assert not may_write_bead(person, in_rig)
    admin = django_user_model.objects.create_user("admin", is_staff=True)
    assert may_write_bead(admin, in_rig) and may_write_bead(admin, pool)
