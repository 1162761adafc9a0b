"""Claims are leases, through `bin/gt` against a real server: `gt claim` and `gt show` say when
the lease lapses, `gt heartbeat` renews it, and a lapsed lease returns the bead (the sweep run
as beat runs it), which a second agent then claims."""

from datetime import timedelta

import pytest
from django.utils import timezone

from convoys import services as convoy_services
from convoys import tasks
from convoys.models import Bead
from rigs import services
from rigs.models import Rig
from tests import factories
from tests.api.test_cli import as_json, gt, ok

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_lapsed_lease_returns_the_bead_end_to_end(asgi_server, settings):
    url = asgi_server
    repository = factories.repository()
    holder, holder_token = services.agent_create(name="holder")
    rival, rival_token = services.agent_create(name="rival")
    rig = factories.rig(agent=holder, repository=repository, slug="h1", state=Rig.State.WORKING)
    rival_rig = factories.rig(
        agent=rival, repository=repository, slug="r1", state=Rig.State.WORKING
    )
    bead = convoy_services.bead_create(title="Pool work", repository=repository)

    out = ok(gt(url, holder_token, "claim", bead.short_id, rig=str(rig.id)))
    assert f"claimed {bead.short_id}" in out and "lease until" in out and "expires in 9m" in out
    shown = ok(gt(url, holder_token, "show", bead.short_id, rig=str(rig.id)))
    assert "assignee holder" in shown and "gt heartbeat renews it" in shown

    Bead.objects.filter(pk=bead.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=30))
    ok(gt(url, holder_token, "heartbeat", rig=str(rig.id)))
    assert "expires in 9m" in ok(gt(url, holder_token, "show", bead.short_id, rig=str(rig.id)))

    Bead.objects.filter(pk=bead.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=5))
    assert "lease lapsed at" in ok(
        gt(url, rival_token, "show", bead.short_id, rig=str(rival_rig.id))
    )
    assert tasks.bead_leases_expire() == [bead.short_id]  # what beat runs every 30 s
    back = as_json(gt(url, rival_token, "show", bead.short_id, "--json", rig=str(rival_rig.id)))
    assert (back["status"], back["assignee"], back["rig"], back["lease_expires_at"]) == (
        "open",
        None,
        None,
        None,
    )
    claimed = as_json(gt(url, rival_token, "claim", bead.short_id, "--json", rig=str(rival_rig.id)))
    assert (claimed["assignee"], claimed["rig"]) == ("rival", rival_rig.id)
    assert claimed["lease_expires_at"]
