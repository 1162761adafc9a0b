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


def test_a_lease_lapses_only_at_its_end():
    """`gt show` compares exact times: 0.4 s before the end the lease still holds (it used to
    round the time left down and say "lapsed" up to a second early); at the end it lapsed."""
    from datetime import UTC, datetime

    from tests.api.test_cli import load_gt

    gt_module = load_gt()
    bead = {"status": "in_progress", "lease_expires_at": "2026-11-28T08:51:05.400000Z"}
    at = datetime(2026, 11, 28, 8, 51, 5, tzinfo=UTC)
    assert gt_module.lease_text(bead, at).startswith("lease until 08:51:05 UTC (expires in 0m 00s)")
    assert "lapsed" not in gt_module.lease_text(bead, at.replace(microsecond=399999))
    assert gt_module.lease_text(bead, at.replace(microsecond=400000)).startswith(
        "lease lapsed at 08:51:05 UTC"
    )
    assert gt_module.lease_text({**bead, "claimed_by_run": 42}, at - timedelta(seconds=598.6)) == (
        "lease until 08:51:05 UTC (expires in 9m 59s), held by run 42; gt heartbeat renews it"
    )
    assert gt_module.lease_text({**bead, "status": "open"}, at) == ""
