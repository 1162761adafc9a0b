"""Claim is atomic: of 20 agents claiming one bead at the same moment, exactly one wins."""

import threading

import pytest
from django.db import close_old_connections, connection

from convoys import services
from convoys.models import Bead
from convoys.services import ClaimConflict
from rigs.models import Rig
from tests import factories

N = 20


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
        try:
            mine = Bead.objects.get(pk=bead.pk)
            barrier.wait(timeout=30)
            services.bead_claim(bead=mine, agent=agent)
            winners.append(agent)
        except ClaimConflict as exc:
            conflicts.append(str(exc))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))
        finally:
            close_old_connections()
            connection.close()

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
