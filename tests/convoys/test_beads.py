"""Beads: cycle refusal, the ready rules one by one, explain, claim, close and auto-dispatch."""

import re
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from convoys import services
from convoys.models import Bead, BeadDependency
from convoys.selectors import bead_explain, beads_ready
from convoys.services import ClaimConflict, DependencyCycle
from convoys.services.beads import NoRigHere
from events.models import Event
from notifications.models import Notification
from rigs.models import Rig
from tests import factories

pytestmark = pytest.mark.django_db

S = Bead.Status
T = BeadDependency.Type


@pytest.fixture
def rig():
    return factories.rig(state=Rig.State.READY)


@pytest.fixture
def new(rig):
    def make(title: str, **kw) -> Bead:
        kw.setdefault("rig", rig)
        return services.bead_create(title=title, **kw)

    return make


def dep(bead, on, type=T.BLOCKS):
    return services.bead_dependency_add(bead=bead, depends_on=on, type=type)


def ready_titles(**scope) -> list[str]:
    return [b.title for b in beads_ready(**scope)]


def set_status(bead, status):
    Bead.objects.filter(pk=bead.pk).update(status=status)
    bead.refresh_from_db()


# --- creation and ids -----------------------------------------------------------------------


def test_short_ids_are_readable_and_unique(new):
    ids = {new(f"b{i}").short_id for i in range(30)}
    assert len(ids) == 30
    assert all(re.fullmatch(r"gt-[0-9a-z]{4,}", i) for i in ids)


def test_create_needs_a_home_and_valid_fields(rig):
    with pytest.raises(ValidationError) as exc:
        services.bead_create(title="homeless")
    assert "rig" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        services.bead_create(title="", rig=rig, priority=7, type="saga", labels=[""])
    assert {"labels"} <= set(exc.value.message_dict)
    with pytest.raises(ValidationError) as exc:
        services.bead_create(title="", rig=rig, priority=7, type="saga")
    assert {"title", "priority", "type"} <= set(exc.value.message_dict)
    pool = services.bead_create(title="pool", repository=rig.repository)
    assert pool.rig is None and pool.repository == rig.repository
    assert Event.objects.filter(kind="bead.created", repository_id=rig.repository.pk).count() == 1


# --- cycles ---------------------------------------------------------------------------------


def test_direct_cycle_is_refused_with_its_path(new):
    a, b = new("a"), new("b")
    dep(a, b)
    with pytest.raises(DependencyCycle) as exc:
        dep(b, a)
    assert exc.value.field == "depends_on" and exc.value.code == "cycle"
    assert exc.value.message == f"dependency cycle: {b.short_id} -> {a.short_id} -> {b.short_id}."
    assert BeadDependency.objects.count() == 1


def test_transitive_cycle_across_blocks_and_parent_child_is_refused(new):
    epic, a, b, c = new("epic"), new("a"), new("b"), new("c")
    dep(a, epic, T.PARENT_CHILD)
    dep(b, a)
    dep(c, b)
    with pytest.raises(DependencyCycle) as exc:
        dep(epic, c)
    path = " -> ".join(x.short_id for x in (epic, c, b, a, epic))
    assert exc.value.message == f"dependency cycle: {path}."


def test_non_blocking_edges_never_make_cycles(new):
    a, b = new("a"), new("b")
    dep(a, b)
    dep(b, a, T.RELATED)  # related/discovered-from do not order work
    c = new("c")
    dep(c, a, T.DISCOVERED_FROM)
    dep(a, c)  # the discovered-from edge does not count


def test_self_and_duplicate_edges_are_refused(new):
    a, b = new("a"), new("b")
    with pytest.raises(ValidationError, match="cannot depend on itself"):
        dep(a, a)
    dep(a, b)
    with pytest.raises(ValidationError, match="already depends on"):
        dep(a, b, T.RELATED)
    with pytest.raises(ValidationError, match="unknown type"):
        dep(b, a, "mentions")


def test_cycle_check_on_a_long_chain(new, django_assert_max_num_queries):
    chain = [new(f"n{i}") for i in range(300)]
    BeadDependency.objects.bulk_create(
        BeadDependency(bead=chain[i + 1], depends_on=chain[i]) for i in range(len(chain) - 1)
    )
    # one recursive query finds it, whatever the length
    with pytest.raises(DependencyCycle) as exc, django_assert_max_num_queries(6):
        dep(chain[0], chain[-1])
    message = exc.value.message
    assert message.startswith(f"dependency cycle: {chain[0].short_id} -> {chain[-1].short_id} -> ")
    assert " -> ... (289 more) -> " in message  # a long cycle is shown by its ends
    assert message.endswith(f" -> {chain[1].short_id} -> {chain[0].short_id}.")


# --- ready: each rule -----------------------------------------------------------------------


def test_ready_needs_status_open(new):
    beads = {s: new(s) for s in S.values}
    for status, bead in beads.items():
        set_status(bead, status)
    assert ready_titles() == ["open"]


def test_ready_skips_deferred_until_the_time_passes(new):
    now = timezone.now()
    new("later", defer_until=now + timedelta(hours=1))
    new("past", defer_until=now - timedelta(hours=1))
    assert ready_titles() == ["past"]
    assert ready_titles(now=now + timedelta(hours=2)) == ["later", "past"]


def test_ready_needs_every_blocks_dependency_closed(new):
    blocker, other, task = new("blocker"), new("other"), new("task")
    dep(task, blocker)
    dep(task, other)
    assert "task" not in ready_titles()
    services.bead_close(bead=blocker)
    assert "task" not in ready_titles()
    set_status(other, S.IN_PROGRESS)
    assert "task" not in ready_titles()  # in progress is still open work
    services.bead_close(bead=other)
    assert "task" in ready_titles()


def test_related_and_discovered_from_do_not_block(new):
    a, b, c = new("a"), new("b"), new("c")
    dep(b, a, T.RELATED)
    dep(c, a, T.DISCOVERED_FROM)
    assert ready_titles() == ["a", "b", "c"]


@pytest.mark.parametrize(
    "block_parent",
    ["open blocker", "status blocked", "status deferred", "deferred until later"],
)
def test_a_blocked_ancestor_blocks_its_descendants(new, block_parent):
    epic, story, task = new("epic"), new("story"), new("task")
    dep(story, epic, T.PARENT_CHILD)
    dep(task, story, T.PARENT_CHILD)
    assert ready_titles() == ["epic", "story", "task"]
    if block_parent == "open blocker":
        dep(epic, new("prerequisite"))
    elif block_parent == "status blocked":
        set_status(epic, S.BLOCKED)
    elif block_parent == "status deferred":
        set_status(epic, S.DEFERRED)
    else:
        Bead.objects.filter(pk=epic.pk).update(defer_until=timezone.now() + timedelta(days=1))
    assert "story" not in ready_titles() and "task" not in ready_titles()


def test_open_in_progress_or_closed_parents_do_not_block(new):
    epic, task = new("epic"), new("task")
    dep(task, epic, T.PARENT_CHILD)
    for status in (S.OPEN, S.IN_PROGRESS, S.CLOSED):
        set_status(epic, status)
        assert "task" in ready_titles()


def test_ready_is_sorted_by_priority_then_age(new):
    new("p2 old", priority=2)
    new("p0", priority=0)
    new("p2 new", priority=2)
    new("p4", priority=4)
    assert ready_titles() == ["p0", "p2 old", "p2 new", "p4"]


def test_ready_is_one_query_and_scoped(new, rig, django_assert_num_queries):
    other_rig = factories.rig(repository=rig.repository)
    new("mine")
    new("theirs", rig=other_rig)
    new("pool", rig=None, repository=rig.repository)
    elsewhere = factories.repository()
    new("other repo pool", rig=None, repository=elsewhere)
    with django_assert_num_queries(1):
        assert ready_titles(rig=rig) == ["mine"]
    assert ready_titles(repository=rig.repository) == ["mine", "theirs", "pool"]
    assert ready_titles(repository=rig.repository, pool=True) == ["pool"]
    assert ready_titles(pool=True) == ["pool", "other repo pool"]


def test_explain_gives_every_reason_and_agrees_with_ready(new):
    now = timezone.now()
    epic, story, task, blocker = new("epic"), new("story"), new("task"), new("blocker")
    dep(story, epic, T.PARENT_CHILD)
    dep(task, story, T.PARENT_CHILD)
    dep(epic, blocker)
    dep(task, blocker)
    Bead.objects.filter(pk=task.pk).update(defer_until=now + timedelta(hours=1))
    task.refresh_from_db()
    reasons = bead_explain(task, now=now)
    assert reasons == [
        f"deferred until {task.defer_until.isoformat()}",
        f"blocked by {blocker.short_id} (open): blocker",
        f"ancestor {epic.short_id} is blocked (it is blocked by {blocker.short_id} (open)): epic",
    ]
    assert bead_explain(story, now=now) == [
        f"parent {epic.short_id} is blocked (it is blocked by {blocker.short_id} (open)): epic"
    ]
    set_status(blocker, S.IN_PROGRESS)
    assert bead_explain(blocker) == ["status is in_progress, not open"]
    ready = set(beads_ready(now=now).values_list("pk", flat=True))
    for bead in Bead.objects.all():
        assert (bead.pk in ready) == (bead_explain(bead, now=now) == []), bead.title


# --- claim ----------------------------------------------------------------------------------


def test_claim_assigns_and_starts_and_reclaim_is_a_noop(new):
    bead = new("task")
    me, other = factories.agent(name="me"), factories.agent(name="other")
    services.bead_claim(bead=bead, agent=me)
    assert (bead.status, bead.assignee, bool(bead.claimed_at)) == (S.IN_PROGRESS, me, True)
    claimed_at = bead.claimed_at
    services.bead_claim(bead=bead, agent=me)
    assert bead.claimed_at == claimed_at
    with pytest.raises(ClaimConflict, match="already claimed by me") as exc:
        services.bead_claim(bead=bead, agent=other)
    assert exc.value.holder == me
    assert Event.objects.filter(kind="bead.claimed").count() == 1


def test_claim_refuses_a_bead_that_is_not_ready(new):
    blocker, task = new("blocker"), new("task")
    dep(task, blocker)
    with pytest.raises(ClaimConflict, match=f"not ready: blocked by {blocker.short_id}"):
        services.bead_claim(bead=task, agent=factories.agent())
    task.refresh_from_db()
    assert task.assignee is None and task.status == S.OPEN


def test_claiming_a_pool_bead_moves_it_into_the_agents_rig(rig):
    agent = rig.agent
    bead = services.bead_create(title="pool work", repository=rig.repository)
    services.bead_claim(bead=bead, agent=agent)
    assert bead.rig == rig and bead.repository is None and bead.assignee == agent

    # an agent whose rig there is still being set up: the claim waits in the pool
    waiting = factories.agent()
    factories.rig(repository=rig.repository, agent=waiting, state=Rig.State.PROVISIONING)
    pooled = services.bead_create(title="more", repository=rig.repository)
    services.bead_claim(bead=pooled, agent=waiting)
    assert pooled.rig is None and pooled.repository == rig.repository
    assert pooled.assignee == waiting

    # an agent with no rig on the repository (or only a failed one) may not take its work
    stranger = factories.agent()
    factories.rig(agent=stranger, state=Rig.State.READY)  # on another repository
    factories.rig(repository=rig.repository, agent=stranger, state=Rig.State.FAILED)
    other = services.bead_create(title="theirs", repository=rig.repository)
    with pytest.raises(NoRigHere, match="has no live rig"):
        services.bead_claim(bead=other, agent=stranger)
    other.refresh_from_db()
    assert (other.status, other.assignee) == (Bead.Status.OPEN, None)


def test_claiming_a_convoy_pool_bead_lands_on_the_agents_leg(rig):
    convoy = services.convoy_create(
        title="c", repository=rig.repository, legs=[{"key": "api", "title": "API", "rig": rig}]
    )
    services.convoy_launch(convoy=convoy)
    bead = services.bead_create(title="pool", convoy=convoy)
    services.bead_claim(bead=bead, agent=rig.agent)
    assert bead.rig == rig and bead.leg.key == "api"


# --- close: unblocked beads and auto-dispatch -----------------------------------------------


def test_close_returns_the_beads_it_unblocked(new, rig):
    blocker, task, also, still = new("blocker"), new("task"), new("also"), new("still")
    other = new("other")
    dep(task, blocker)
    dep(also, blocker)
    dep(still, blocker)
    dep(still, other)
    child = new("child")
    dep(child, task, T.PARENT_CHILD)  # its parent was blocked, so it was too
    closed, unblocked = services.bead_close(bead=blocker, reason="done")
    assert closed.status == S.CLOSED and closed.close_reason == "done" and closed.closed_at
    assert [b.title for b in unblocked] == ["task", "also", "child"]  # not "still"


def test_close_unblocks_descendants_of_a_blocked_parent(new):
    blocker, epic, child, grandchild = new("blocker"), new("epic"), new("child"), new("gc")
    dep(epic, blocker)
    dep(child, epic, T.PARENT_CHILD)
    dep(grandchild, child, T.PARENT_CHILD)
    _, unblocked = services.bead_close(bead=blocker)
    assert {b.title for b in unblocked} == {"epic", "child", "gc"}


def test_unblocked_work_is_dispatched_to_its_rig_right_away(new, rig):
    other_rig = factories.rig(repository=rig.repository, state=Rig.State.READY)
    blocker = new("blocker")
    mine, theirs = new("mine"), new("theirs", rig=other_rig)
    dep(mine, blocker)
    dep(theirs, blocker)
    services.bead_close(bead=blocker)
    note = Notification.objects.get(rig=other_rig)
    assert note.kind == Notification.Kind.UNBLOCKED
    assert note.summary.startswith(f"{theirs.short_id} is ready: theirs")
    assert note.changes == {"beads": [theirs.short_id], "unblocked_by": blocker.short_id}
    assert Notification.objects.filter(rig=rig, kind=Notification.Kind.UNBLOCKED).exists()
    events = Event.objects.filter(kind="beads.unblocked")
    assert {tuple(e.payload["beads"]) for e in events} == {(mine.short_id,), (theirs.short_id,)}
    assert Event.objects.filter(kind="notification.new", rig_id=other_rig.pk).exists()


def test_removing_a_dependency_unblocks(new):
    blocker, task = new("blocker"), new("task")
    dep(task, blocker)
    unblocked = services.bead_dependency_remove(bead=task, depends_on=blocker)
    assert unblocked == [task]


def test_reopening_a_blocker_blocks_again(new):
    blocker, task = new("blocker"), new("task")
    dep(task, blocker)
    services.bead_close(bead=blocker)
    assert "task" in ready_titles()
    services.bead_reopen(bead=blocker)
    assert "task" not in ready_titles()


@pytest.mark.parametrize("seed", range(5))
def test_ready_matches_a_plain_python_reading_of_the_rules(rig, seed):
    """A random acyclic graph: the SQL agrees with the rules written out in Python, and
    explain agrees with both."""
    import random

    rng = random.Random(seed)
    now = timezone.now()
    beads = [
        factories.bead(
            rig=rig,
            status=rng.choice([S.OPEN] * 4 + [S.IN_PROGRESS, S.BLOCKED, S.DEFERRED, S.CLOSED] * 2),
            defer_until=rng.choice(
                [None] * 6 + [now - timedelta(hours=1), now + timedelta(hours=1)]
            ),
        )
        for _ in range(60)
    ]
    edges = set()
    for _ in range(90):  # later beads depend on earlier ones: acyclic
        i, j = sorted(rng.sample(range(len(beads)), 2), reverse=True)
        if (i, j) not in edges:
            edges.add((i, j))
            kind = rng.choice([T.BLOCKS, T.BLOCKS, T.PARENT_CHILD, T.RELATED])
            BeadDependency.objects.create(bead=beads[i], depends_on=beads[j], type=kind)
    deps = list(BeadDependency.objects.values_list("bead_id", "depends_on_id", "type"))
    by_id = {b.pk: b for b in Bead.objects.all()}

    def deferred(b):
        return b.defer_until is not None and b.defer_until > now

    def open_blockers(b):
        return [
            d for x, d, t in deps if x == b.pk and t == T.BLOCKS and by_id[d].status != S.CLOSED
        ]

    def blocked(b):  # rule 4a-c, for an ancestor
        return b.status != S.CLOSED and (
            b.status in (S.BLOCKED, S.DEFERRED) or deferred(b) or bool(open_blockers(b))
        )

    def ancestors(b):
        seen, todo = set(), [b.pk]
        while todo:
            child = todo.pop()
            for x, d, t in deps:
                if x == child and t == T.PARENT_CHILD and d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    expected = {
        b.pk
        for b in by_id.values()
        if b.status == S.OPEN
        and not deferred(b)
        and not open_blockers(b)
        and not any(blocked(by_id[a]) for a in ancestors(b))
    }
    assert set(beads_ready(now=now).values_list("pk", flat=True)) == expected
    for bead in by_id.values():
        assert (bead_explain(bead, now=now) == []) == (bead.pk in expected)


@pytest.mark.django_db(transaction=True)
def test_dispatch_is_pushed_on_commit_not_polled(new, rig, monkeypatch):
    from django.db import transaction

    from events import services as events

    blocker, task = new("blocker"), new("task")
    dep(task, blocker)
    pushed = []
    monkeypatch.setattr(events, "events_broadcast", lambda batch: pushed.extend(batch))
    with transaction.atomic():
        services.bead_close(bead=blocker)
        assert pushed == []  # nothing is pushed before the commit
    kinds = [(e.kind, e.rig_id) for e in pushed]
    assert ("notification.new", rig.id) in kinds and ("beads.unblocked", rig.id) in kinds
    assert f"rig.{rig.id}" in events.event_groups(pushed[kinds.index(("notification.new", rig.id))])
