"""Claims are leases: a claim holds while its holder's heartbeats (or its run's output) renew it;
when its lease lapses (the beat sweep, or a claim by someone else) or its run ends, the bead is
open again, with a `bead.claim_lapsed` event and a note on the bead. (The races between a lapse
and a renewal are in test_claim_race.py, on PostgreSQL.)"""

from datetime import timedelta

import pytest
from django.utils import timezone

from convoys import services, tasks
from convoys.models import Bead, BeadComment
from convoys.services import ClaimConflict
from events.models import Event
from rigs import services as rig_services
from rigs.models import Rig
from runner import services as run_services
from runner.models import AgentRun
from tests import factories

pytestmark = pytest.mark.django_db

S = Bead.Status
LEASE = 600


@pytest.fixture(autouse=True)
def lease(settings):
    settings.GASTOWN_CLAIM_LEASE_SECONDS = LEASE


@pytest.fixture
def rig():
    return factories.rig(state=Rig.State.WORKING)


def lapse(bead: Bead, seconds: float = 1) -> None:
    Bead.objects.filter(pk=bead.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=seconds)
    )


def expires_in(bead: Bead) -> float:
    bead.refresh_from_db()
    return (bead.lease_expires_at - timezone.now()).total_seconds()


def running(rig: Rig) -> AgentRun:
    return AgentRun.objects.create(
        rig=rig, agent=rig.agent, command="x", state="running", started_at=timezone.now()
    )


def test_a_claim_is_a_lease_held_by_the_agents_live_run(rig):
    plain = services.bead_create(title="no run", rig=rig)
    services.bead_claim(bead=plain, agent=rig.agent)
    assert LEASE - 5 < expires_in(plain) <= LEASE
    assert plain.claimed_by_run_id is None  # no run: the agent holds it itself
    run = running(rig)
    bead = services.bead_create(title="in a run", rig=rig)
    services.bead_claim(bead=bead, agent=rig.agent)
    assert bead.claimed_by_run_id == run.id
    event = Event.objects.filter(kind="bead.claimed").last()
    assert event.payload["run"] == run.id
    assert event.payload["lease_expires_at"] == bead.lease_expires_at.isoformat()


def test_the_sweep_returns_a_lapsed_claim_with_an_event_and_a_note(rig):
    bead = services.bead_create(title="abandoned", rig=rig)
    held = services.bead_create(title="still held", rig=rig)
    for b in (bead, held):
        services.bead_claim(bead=b, agent=rig.agent)
    lapse(bead)

    assert tasks.bead_leases_expire() == [bead.short_id]  # the beat task's body, run directly

    bead.refresh_from_db()
    assert (bead.status, bead.assignee, bead.lease_expires_at, bead.claimed_at) == (
        S.OPEN,
        None,
        None,
        None,
    )
    note = BeadComment.objects.get(bead=bead)
    assert note.author == "gastown"
    assert note.text.startswith(f"Claim by {rig.agent.name} ended: no heartbeat for {LEASE} s")
    assert "The bead is open again" in note.text
    [event] = Event.objects.filter(kind="bead.claim_lapsed")
    assert event.rig_id == rig.id
    assert event.payload == {
        "bead": bead.short_id,
        "title": bead.title,
        "agent": rig.agent.name,
        "run": None,
        "cause": "lease",
        "reason": event.payload["reason"],
        "from": S.IN_PROGRESS,
        "to": S.OPEN,
        "to_pool": False,
        "taken_by": None,
        "comment": note.pk,
    }
    assert event.payload["reason"].startswith(f"no heartbeat for {LEASE} s (its lease lapsed at")
    held.refresh_from_db()
    assert held.status == S.IN_PROGRESS and held.assignee == rig.agent
    assert tasks.bead_leases_expire() == []  # nothing more (and a second run changes nothing)
    services.bead_claim(bead=bead, agent=rig.agent)  # a second claim takes it
    assert bead.status == S.IN_PROGRESS


def test_the_sweep_is_scheduled_by_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["expire-claim-leases"]
    assert entry["task"] == tasks.bead_leases_expire.name == "convoys.tasks.bead_leases_expire"
    assert entry["schedule"] <= 60


def test_a_claim_wins_over_a_lapsed_lease_and_notes_it(rig):
    """The lazy check: no sweep needed. A pool bead taken into A's rig by A's claim is still a
    pool bead to B, and B's claim wins once A's lease lapsed, moving it into B's rig."""
    a = rig.agent
    b_rig = factories.rig(repository=rig.repository, state=Rig.State.WORKING)
    b = b_rig.agent
    bead = services.bead_create(title="pool work", repository=rig.repository)
    services.bead_claim(bead=bead, agent=a)
    assert (bead.rig, bead.claimed_from_pool) == (rig, True)
    with pytest.raises(ClaimConflict, match=f"already claimed by {a.name} \\(its lease runs"):
        services.bead_claim(bead=Bead.objects.get(pk=bead.pk), agent=b)

    lapse(bead)
    bead = services.bead_claim(bead=Bead.objects.get(pk=bead.pk), agent=b)

    assert (bead.status, bead.assignee, bead.rig) == (S.IN_PROGRESS, b, b_rig)
    assert LEASE - 5 < expires_in(bead) <= LEASE
    kinds = list(Event.objects.filter(kind__startswith="bead.").values_list("kind", flat=True))
    assert kinds[-2:] == ["bead.claim_lapsed", "bead.claimed"]
    lapsed = Event.objects.get(kind="bead.claim_lapsed").payload
    assert (lapsed["agent"], lapsed["cause"], lapsed["to_pool"]) == (a.name, "lease", False)
    assert Event.objects.filter(kind="bead.claimed").last().payload["from"] == S.IN_PROGRESS
    [note] = BeadComment.objects.filter(bead=bead)
    assert f"Claim by {a.name} ended: no heartbeat" in note.text
    assert note.text.endswith(f"{b.name} claimed the bead.") and "open again" not in note.text


def test_a_lapsed_pool_claim_goes_back_to_its_pool(rig):
    repository = rig.repository
    other = factories.rig(repository=repository, state=Rig.State.WORKING)
    bead = services.bead_create(title="pool work", repository=repository)
    services.bead_claim(bead=bead, agent=rig.agent)
    lapse(bead)
    services.bead_leases_expire()
    bead.refresh_from_db()
    assert (bead.rig, bead.repository, bead.status, bead.claimed_from_pool) == (
        None,
        repository,
        S.OPEN,
        False,
    )
    assert Event.objects.get(kind="bead.claim_lapsed").payload["to_pool"] is True
    assert "back in its pool" in BeadComment.objects.get(bead=bead).text
    services.bead_claim(bead=bead, agent=other.agent)
    assert (bead.rig, bead.assignee) == (other, other.agent)


def test_heartbeats_renew_the_agents_claims_not_a_lapsed_one_nor_others(rig):
    soon, gone = (services.bead_create(title=t, rig=rig) for t in ("soon", "gone"))
    elsewhere = factories.rig(state=Rig.State.WORKING)
    theirs = services.bead_create(title="theirs", rig=elsewhere)
    for bead, agent in ((soon, rig.agent), (gone, rig.agent), (theirs, elsewhere.agent)):
        services.bead_claim(bead=bead, agent=agent)
    short = timezone.now() + timedelta(seconds=30)
    Bead.objects.filter(pk__in=[soon.pk, theirs.pk]).update(lease_expires_at=short)
    lapse(gone)

    rig_services.rig_heartbeat(rig=rig)  # what POST rigs/{id}/heartbeat/ and `gt heartbeat` do

    assert LEASE - 5 < expires_in(soon) <= LEASE
    assert expires_in(gone) < 0  # lapsed: not renewed (it may already be someone else's)
    assert expires_in(theirs) < 31  # another agent's claim
    assert [b.short_id for b in services.bead_leases_expire()] == [gone.short_id]


def test_reclaiming_your_own_bead_renews_its_lease(rig):
    bead = services.bead_create(title="mine", rig=rig)
    services.bead_claim(bead=bead, agent=rig.agent)
    Bead.objects.filter(pk=bead.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=9))
    services.bead_claim(bead=Bead.objects.get(pk=bead.pk), agent=rig.agent)
    assert expires_in(bead) > LEASE - 5
    assert Event.objects.filter(kind="bead.claimed").count() == 1
    lapse(bead)  # lapsed but nobody took it: the holder's claim takes it again, with no note
    services.bead_claim(bead=Bead.objects.get(pk=bead.pk), agent=rig.agent)
    assert expires_in(bead) > LEASE - 5 and bead.assignee == rig.agent
    assert not BeadComment.objects.filter(bead=bead).exists()


def test_a_run_ending_returns_the_claims_it_did_not_close(rig):
    run = running(rig)
    left, done = (services.bead_create(title=t, rig=rig) for t in ("left", "done"))
    for bead in (left, done):
        services.bead_claim(bead=bead, agent=rig.agent)
    assert left.claimed_by_run_id == run.id
    services.bead_close(bead=done, reason="finished")
    done.refresh_from_db()
    assert (done.lease_expires_at, done.claimed_by_run_id) == (None, None)  # closing ends it

    run_services.agent_run_exited(run=run, exit_code=1)

    left.refresh_from_db()
    assert (left.status, left.assignee, left.claimed_by_run_id) == (S.OPEN, None, None)
    done.refresh_from_db()
    assert done.status == S.CLOSED
    [event] = Event.objects.filter(kind="bead.claim_lapsed")
    assert (event.payload["cause"], event.payload["run"], event.payload["bead"]) == (
        "run_ended",
        run.id,
        left.short_id,
    )
    note = BeadComment.objects.get(bead=left).text
    assert note.startswith(f"Claim by {rig.agent.name} (run {run.id}) ended: run {run.id} ended")
    assert "failed (exited with code 1) without closing it" in note


def test_a_claim_made_outside_the_run_is_not_returned_with_it(rig):
    """Only the run's own claims end with it: a claim the agent made in another rig, where it
    has no run, stays (its lease still ends it)."""
    run = running(rig)
    other_rig = factories.rig(agent=rig.agent, state=Rig.State.WORKING)
    bead = services.bead_create(title="elsewhere", rig=other_rig)
    services.bead_claim(bead=bead, agent=rig.agent)
    assert bead.claimed_by_run_id is None
    run_services.agent_run_exited(run=run, exit_code=0)
    bead.refresh_from_db()
    assert bead.status == S.IN_PROGRESS


def test_the_runs_output_renews_its_claims_at_most_once_a_minute(rig):
    run = running(rig)
    bead = services.bead_create(title="busy", rig=rig)
    services.bead_claim(bead=bead, agent=rig.agent)
    Bead.objects.filter(pk=bead.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=20))
    run_services.agent_run_output_seen(run_id=run.id)  # what the supervisor does every 5 s
    renewed = Bead.objects.get(pk=bead.pk).lease_expires_at
    assert (renewed - timezone.now()).total_seconds() > LEASE - 5
    run_services.agent_run_output_seen(run_id=run.id)
    assert Bead.objects.get(pk=bead.pk).lease_expires_at == renewed  # it would gain too little


def test_leaving_in_progress_ends_the_lease_and_starting_again_gives_one(rig):
    bead = services.bead_create(title="t", rig=rig)
    services.bead_claim(bead=bead, agent=rig.agent)
    services.bead_transition(bead=bead, to=S.BLOCKED)
    bead.refresh_from_db()
    assert (bead.status, bead.lease_expires_at) == (S.BLOCKED, None)
    services.bead_transition(bead=bead, to=S.IN_PROGRESS)  # still assigned: a new lease
    assert LEASE - 5 < expires_in(bead) <= LEASE
