"""Claim is atomic: of 20 agents claiming one bead at the same moment, exactly one wins; and a
claim of a lapsed lease, the lapse sweep and the holder's renewal never both win."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import close_old_connections, connection, connections, transaction
from django.utils import timezone

from convoys import services
from convoys.models import Bead, BeadComment
from convoys.services import ClaimConflict
from events.models import Event
from rigs.models import Rig
from tests import factories

N = 20


def claim_at_barrier(bead, agent, barrier, winners, conflicts, errors) -> None:
    """One claimant's thread: wait for the others at `barrier`, claim, and note the outcome."""
    try:
        mine = Bead.objects.get(pk=bead.pk)
        barrier.wait(timeout=30)
        services.bead_claim(bead=mine, agent=agent)
        winners.append(agent)
    except ClaimConflict as exc:
        conflicts.append(str(exc))
    except Exception as exc:  # pragma: no cover - reported by the test
        errors.append(repr(exc))
    finally:
        close_old_connections()
        connection.close()


@pytest.mark.postgres
def test_twenty_agents_race_for_one_bead(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("the claim race needs PostgreSQL (SQLite serializes writers anyway)")
    repo = factories.repository()
    agents = [factories.agent() for _ in range(N)]
    for agent in agents:
        factories.rig(repository=repo, agent=agent, state=Rig.State.READY)
    bead = services.bead_create(title="the one job", repository=repo)

    barrier = threading.Barrier(N)
    winners, conflicts, errors = [], [], []

    def claim(agent) -> None:
        claim_at_barrier(bead, agent, barrier, winners, conflicts, errors)

    threads = [threading.Thread(target=claim, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert len(winners) == 1, winners
    [winner] = winners
    assert len(conflicts) == N - 1
    assert all(f"already claimed by {winner.name}" in c for c in conflicts), conflicts[:3]
    bead.refresh_from_db()
    assert bead.assignee == winner and bead.status == Bead.Status.IN_PROGRESS
    assert bead.rig.agent == winner  # moved from the pool into the winner's rig


# --- a lapse racing a renewal ------------------------------------------------------------------
#
# The holder's lease lapses while a second claimant races the holder's renewal. Every step is a
# conditional UPDATE whose WHERE re-reads the row it waited for (PostgreSQL re-checks a waiting
# UPDATE on the version that committed): whichever commits first wins, the other finds its
# condition false. The first tests hold one side's transaction open until the other is seen
# waiting for its lock, so both orders are checked for certain; the last one lets them run free.


def _waiting_for_a_lock(timeout: float = 10.0) -> bool:
    """True once another connection of this database waits for a row lock."""
    deadline = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.02)
    return False


def _held_pool_bead():
    """A pool bead claimed by `holder` (into its rig), and a `rival` with a rig on the same
    repository; the holder's lease has just lapsed (a second ago)."""
    repo = factories.repository()
    holder_rig = factories.rig(repository=repo, state=Rig.State.WORKING)
    rival_rig = factories.rig(repository=repo, state=Rig.State.WORKING)
    bead = services.bead_create(title="contested", repository=repo)
    services.bead_claim(bead=bead, agent=holder_rig.agent)
    lapsed = timezone.now() - timedelta(seconds=1)
    Bead.objects.filter(pk=bead.pk).update(lease_expires_at=lapsed)
    # the holder's clock read just before the lapse: to it, the lease is still alive
    return bead, holder_rig.agent, rival_rig.agent, lapsed - timedelta(milliseconds=500)


def _race(first, second) -> dict:
    """Run `first` in a transaction kept open until `second` (in another thread and connection)
    is seen waiting for the row's lock; then commit it and let `second` finish."""
    started, release = threading.Event(), threading.Event()
    out: dict = {}

    def run(name, step, hold) -> None:
        try:
            if hold:
                with transaction.atomic():
                    out[name] = step()
                    started.set()
                    release.wait(timeout=30)
            else:
                started.wait(timeout=30)
                out[name] = step()
        except Exception as exc:
            out[name] = exc
        finally:
            started.set()
            close_old_connections()
            connection.close()

    threads = [
        threading.Thread(target=run, args=("first", first, True)),
        threading.Thread(target=run, args=("second", second, False)),
    ]
    for t in threads:
        t.start()
    out["waited"] = _waiting_for_a_lock()
    release.set()
    for t in threads:
        t.join(timeout=60)
    return out


def _needs_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the lapse race needs PostgreSQL (SQLite serializes writers anyway)")


@pytest.mark.postgres
def test_a_renewal_that_commits_first_beats_a_claim_of_the_lapsed_lease(transactional_db):
    _needs_postgres()
    bead, holder, rival, before_lapse = _held_pool_bead()
    out = _race(
        lambda: services.bead_leases_renew(agent=holder, bead=bead, now=before_lapse),
        lambda: services.bead_claim(bead=Bead.objects.get(pk=bead.pk), agent=rival),
    )
    assert out["waited"], "the claim never waited for the renewal's lock"
    assert out["first"] == 1
    assert isinstance(out["second"], ClaimConflict), out["second"]
    assert f"already claimed by {holder.name}" in str(out["second"])
    bead.refresh_from_db()
    assert (bead.assignee, bead.status) == (holder, Bead.Status.IN_PROGRESS)
    assert bead.lease_expires_at > timezone.now()
    assert not Event.objects.filter(kind="bead.claim_lapsed").exists()


@pytest.mark.postgres
def test_a_claim_of_the_lapsed_lease_that_commits_first_beats_the_renewal(transactional_db):
    _needs_postgres()
    bead, holder, rival, before_lapse = _held_pool_bead()
    out = _race(
        lambda: services.bead_claim(bead=Bead.objects.get(pk=bead.pk), agent=rival),
        lambda: services.bead_leases_renew(agent=holder, bead=bead, now=before_lapse),
    )
    assert out["waited"], "the renewal never waited for the claim's lock"
    assert out["second"] == 0  # the renewal found the bead someone else's
    bead.refresh_from_db()
    assert (bead.assignee, bead.status) == (rival, Bead.Status.IN_PROGRESS)
    assert bead.rig.agent == rival  # a pool bead: it moved into the rival's rig
    [lapsed] = Event.objects.filter(kind="bead.claim_lapsed")
    assert lapsed.payload["agent"] == holder.name
    assert BeadComment.objects.filter(bead=bead, author="gastown").count() == 1


@pytest.mark.postgres
def test_the_sweep_and_a_renewal_never_both_win(transactional_db):
    _needs_postgres()
    bead, holder, _, before_lapse = _held_pool_bead()
    out = _race(
        lambda: services.bead_leases_expire(),
        lambda: services.bead_leases_renew(agent=holder, bead=bead, now=before_lapse),
    )
    assert out["waited"] and [b.pk for b in out["first"]] == [bead.pk] and out["second"] == 0
    bead.refresh_from_db()
    assert (bead.status, bead.assignee, bead.rig) == (Bead.Status.OPEN, None, None)  # its pool

    bead, holder, _, before_lapse = _held_pool_bead()
    out = _race(
        lambda: services.bead_leases_renew(agent=holder, bead=bead, now=before_lapse),
        lambda: services.bead_leases_expire(),
    )
    assert out["waited"] and out["first"] == 1 and out["second"] == []
    bead.refresh_from_db()
    assert (bead.status, bead.assignee) == (Bead.Status.IN_PROGRESS, holder)


@pytest.mark.postgres
def test_claimants_racing_renewals_of_a_lapsing_lease_leave_exactly_one_holder(
    transactional_db,
):
    """Free-running: on each round the holder's lease lapses as 10 claimants and 4 renewals
    (clocks read on either side of the lapse) start at once. Either a renewal commits first and
    every claim is refused, or one claimant wins and no renewal does."""
    _needs_postgres()
    claimants = 10
    outcomes = set()
    for _ in range(5):
        bead, holder, _, before_lapse = _held_pool_bead()
        repo = bead.rig.repository
        rivals = [factories.rig(repository=repo, state=Rig.State.WORKING) for _ in range(claimants)]
        barrier = threading.Barrier(claimants + 4)
        winners, conflicts, renewed, errors = [], [], [], []

        def claim(agent) -> None:
            claim_at_barrier(bead, agent, barrier, winners, conflicts, errors)

        def renew(now) -> None:
            try:
                barrier.wait(timeout=30)
                renewed.append(services.bead_leases_renew(agent=holder, bead=bead, now=now))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(repr(exc))
            finally:
                close_old_connections()
                connection.close()

        threads = [threading.Thread(target=claim, args=(r.agent,)) for r in rivals]
        threads += [
            threading.Thread(target=renew, args=(now,))
            for now in (before_lapse, before_lapse, None, None)  # None: its own clock, lapsed
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

        assert errors == []
        assert len(winners) + len(conflicts) == claimants
        bead.refresh_from_db()
        if winners:
            [winner] = winners
            assert sum(renewed) == 0
            assert bead.assignee == winner and bead.rig.agent == winner
            lapses = Event.objects.filter(kind="bead.claim_lapsed", payload__bead=bead.short_id)
            assert [e.payload["agent"] for e in lapses] == [holder.name]
        else:
            assert sum(renewed) >= 1
            assert bead.assignee == holder and bead.lease_expires_at > timezone.now()
        assert bead.status == Bead.Status.IN_PROGRESS
        outcomes.add("claimed" if winners else "renewed")
    print("outcomes seen:", sorted(outcomes))
