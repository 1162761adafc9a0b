import pytest
from django.db import IntegrityError, transaction

from convoys.models import Bead, BeadDependency, LegDependency
from events.models import Event
from notifications.models import Notification
from rigs.models import Agent, MergeRequest, Rig, hash_token
from tests import factories

pytestmark = pytest.mark.django_db


def refused(fn):
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


def test_bead_priority_range():
    refused(lambda: factories.bead(priority=5))


def test_bead_needs_a_home():
    refused(lambda: Bead.objects.create(short_id="gt-zzzz", title="homeless"))


def test_pool_bead_allowed():
    bead = factories.bead(repository=factories.repository())
    assert bead.rig is None


def test_bead_cannot_depend_on_itself_or_twice():
    a, b = factories.bead(), factories.bead()
    refused(lambda: BeadDependency.objects.create(bead=a, depends_on=a))
    BeadDependency.objects.create(bead=a, depends_on=b)
    refused(lambda: BeadDependency.objects.create(bead=a, depends_on=b, type="related"))


def test_leg_cannot_depend_on_itself():
    leg = factories.leg()
    refused(lambda: LegDependency.objects.create(leg=leg, depends_on=leg))


def test_leg_key_unique_per_convoy():
    leg = factories.leg(key="api")
    refused(lambda: factories.leg(convoy=leg.convoy, key="api"))
    factories.leg(key="api")  # another convoy may reuse it


def test_rig_slug_unique_per_repository():
    rig = factories.rig(slug="api")
    refused(lambda: factories.rig(repository=rig.repository, slug="api"))


def test_rig_state_must_be_known():
    refused(lambda: factories.rig(state="exploded"))


def test_one_active_merge_request_per_rig():
    rig = factories.rig()
    factories.merge_request(rig=rig)
    refused(lambda: factories.merge_request(rig=rig))
    # finished ones do not count
    MergeRequest.objects.filter(rig=rig).update(state=MergeRequest.State.MERGED)
    factories.merge_request(rig=rig)


def test_repository_batch_size_range():
    refused(lambda: factories.repository(batch_size=0))


def test_convoy_budget_non_negative():
    refused(lambda: factories.convoy(budget_usd=-1))


def test_open_notifications_merge_by_fingerprint():
    rig = factories.rig()
    n = factories.notification(rig=rig, fingerprint="same")
    refused(lambda: factories.notification(rig=rig, fingerprint="same"))
    Notification.objects.filter(pk=n.pk).update(state="acknowledged")
    m = factories.notification(rig=rig, fingerprint="same")  # a closed one no longer blocks
    Notification.objects.filter(pk=m.pk).update(state="resolved")
    factories.notification(rig=rig, fingerprint="same")
    refused(lambda: factories.notification(rig=rig, state="forgotten"))


def test_events_are_append_only():
    event = factories.event()
    event.kind = "changed"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()
    assert Event.objects.get(pk=event.pk).kind == "test"


def test_agent_token_is_stored_hashed():
    agent = Agent(name="claude-1")
    token = agent.issue_token()
    agent.save()
    stored = Agent.objects.get(pk=agent.pk)
    assert token not in (stored.token_hash, stored.token_prefix * 2)
    assert stored.token_hash == hash_token(token)
    assert stored.token_valid()


def test_rig_is_live():
    assert factories.rig(state=Rig.State.WORKING).is_live
    assert not factories.rig(state=Rig.State.ARCHIVED).is_live
