"""GET me/ and me/prime/: who am I, and the briefing an LLM agent reads first."""

import pytest

from convoys import services
from notifications.models import Notification
from rigs.models import Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


def launched_leg(agent, **rig_kw):
    rig = factories.rig(agent=agent, state=Rig.State.WORKING, **rig_kw)
    convoy = services.convoy_create(
        title="Build auth",
        repository=rig.repository,
        use_integration_branch=True,
        slug="auth",
        legs=[{"key": "api", "title": "API endpoints", "rig": rig.id}],
    )
    services.convoy_launch(convoy=convoy)
    return rig, convoy


def test_me_for_an_agent(make_agent, django_assert_max_num_queries):
    agent, client = make_agent()
    rig, convoy = launched_leg(agent)
    other = factories.rig(agent=agent, repository=rig.repository, state=Rig.State.READY)
    factories.rig(agent=agent, state=Rig.State.ARCHIVED)
    factories.notification(rig=other)
    with django_assert_max_num_queries(5):
        body = client.get("/api/v1/me/").json()
    assert body["kind"] == "agent" and body["agent"]["name"] == agent.name
    assert [r["id"] for r in body["rigs"]] == [rig.id, other.id]  # archived rigs left out
    first = body["rigs"][0]
    assert first["merge_target"] == "convoy/auth" and first["branch"] == rig.branch
    assert body["assignment"]["convoy"] == convoy.id and body["assignment"]["leg_key"] == "api"
    # the launch sent the rig an "assigned" notification; the other rig has one too
    assert body["unread_notifications"] == 2
    assert first["unacked_notifications"] == 1


def test_me_for_people(viewer, operator, nobody, anon):
    body = viewer.get("/api/v1/me/").json()
    assert body == {
        "kind": "person",
        "agent": None,
        "user": {"username": "viewer", "roles": ["viewer"]},
        "rigs": [],
        "assignment": None,
        "unread_notifications": 0,
    }
    assert operator.get("/api/v1/me/").json()["user"]["roles"] == ["operator"]
    assert nobody.get("/api/v1/me/").status_code == 403
    assert anon.get("/api/v1/me/").status_code == 401


def test_prime_briefs_the_agent(make_agent):
    agent, client = make_agent()
    rig, convoy = launched_leg(agent, scope=["auth/**"])
    rig.worktree_path = "/work/worktrees/app/api"
    rig.save()
    urgent = services.bead_create(title="Write the login endpoint", rig=rig, priority=0)
    later = services.bead_create(title="Document it", rig=rig, priority=3)
    services.bead_dependency_add(bead=later, depends_on=urgent)
    response = client.get("/api/v1/me/prime/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for expected in [
        f"agent `{agent.name}`",
        f"rig `{rig.slug}`",
        "/work/worktrees/app/api",
        rig.branch,
        "merge target: `convoy/auth`",
        "Leg `api`: API endpoints",
        f'convoy #{convoy.id} "Build auth"',
        f"{urgent.short_id} [P0 task] Write the login endpoint",
        "Open notices (1",
        f"gt claim {urgent.short_id}",
        "gt done",
        "auth/**",
    ]:
        assert expected in text, (expected, text)
    assert later.short_id not in text.split("## Ready")[1].split("##")[0]  # blocked


def test_prime_stays_short_with_a_lot_to_say(make_agent):
    agent, client = make_agent()
    rig, _ = launched_leg(agent)
    for n in range(40):
        services.bead_create(title=f"task {n} " + "words " * 45, rig=rig, priority=n % 5)
    for n in range(30):
        factories.notification(
            rig=rig,
            kind=Notification.Kind.BASE_MOVED,
            summary=f"main moved {n} " + "x" * 250,
            action="rebase " * 80,
        )
    text = client.get("/api/v1/me/prime/").content.decode()
    # ~4 characters a token: well under 1,500 tokens
    assert len(text) < 5000, len(text)
    assert "more: `gt ready`" in text


def test_prime_rig_choice_and_refusals(make_agent, viewer):
    agent, client = make_agent()
    _, lonely = make_agent("lonely")
    text = lonely.get("/api/v1/me/prime/").content.decode()
    assert "You have no rig yet" in text
    first = factories.rig(agent=agent, state=Rig.State.READY, slug="first")
    second = factories.rig(agent=agent, state=Rig.State.READY, slug="second")
    text = client.get("/api/v1/me/prime/?rig=second").content.decode()
    assert "rig `second`" in text and f"first (id {first.id}" in text
    assert (
        f"rig `second` (id {second.id})"
        in client.get(f"/api/v1/me/prime/?rig={second.id}").content.decode()
    )
    response = client.get("/api/v1/me/prime/?rig=nope")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert error_of(response)["code"] == "not_found"
    response = viewer.get("/api/v1/me/prime/")
    assert response.status_code == 404 and error_of(response)["code"] == "no_agent"
