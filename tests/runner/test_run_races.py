"""Launching is atomic: of 10 operators launching one rig's agent at once, exactly one wins."""

import threading

import pytest
from django.db import close_old_connections, connection

from rigs.models import Rig
from runner import services
from runner.models import AgentRun
from tests import factories

N = 10


@pytest.mark.postgres
def test_ten_launches_of_one_rig_make_one_run(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("the race needs PostgreSQL (SQLite serializes writers anyway)")
    rig = factories.rig(agent=factories.agent(runtime="scripted"), state=Rig.State.READY)
    barrier = threading.Barrier(N)
    made, refused, errors = [], [], []

    def launch() -> None:
        try:
            mine = Rig.objects.select_related("agent").get(pk=rig.pk)
            barrier.wait(timeout=30)
            made.append(services.agent_run_request(rig=mine, requested_by="race"))
        except services.RunConflict as exc:
            refused.append(exc.code)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=launch) for _ in range(N)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(made) == 1 and refused == ["run_active"] * (N - 1)
    assert AgentRun.objects.filter(rig=rig).count() == 1
