"""Convoys and legs: validation, waves, launch, landing on merge, integration branch, reopening.

Merges are announced here by sending `rigs.signals.merge_landed` the way the merge queue does
(tests/convoys/helpers.py); the end-to-end versions (a real queue landing real branches) belong
with the merge-queue tests.
"""

import pytest
from django.core.exceptions import ValidationError

from common.statemachine import IllegalTransition
from convoys import services
from convoys.models import Convoy, Leg, LegDependency
from convoys.selectors import convoy_rollup, convoy_waves, merge_target_for_rig
from events.models import Event
from notifications.models import Notification
from rigs.models import MergeRequest, Rig
from rigs.services import rig_transition
from tests import factories
from tests.convoys.helpers import land, land_convoy_branch

pytestmark = pytest.mark.django_db

K = Notification.Kind


@pytest.fixture
def repo():
    return factories.repository()


def live_rig(repo, **kw) -> Rig:
    kw.setdefault("state", Rig.State.READY)
    return factories.rig(repository=repo, **kw)


def auth_convoy(repo, *, integration=False, **kw) -> Convoy:
    """api ← frontend, api ← tests, (frontend, tests) ← docs: three waves."""
    rigs = {key: live_rig(repo, slug=f"{key}-rig") for key in ("api", "frontend", "tests", "docs")}
    return services.convoy_create(
        title="Build the authentication system",
        repository=repo,
        target_branch="main",
        use_integration_branch=integration,
        legs=[
            {"key": "api", "title": "API endpoints", "rig": rigs["api"]},
            {"key": "frontend", "title": "Login UI", "rig": rigs["frontend"].id,
             "depends_on": ["api"]},
            {"key": "tests", "title": "Integration tests", "rig": rigs["tests"],
             "depends_on": ["api"], "scope": ["tests/**"]},
            {"key": "docs", "title": "Docs", "rig": rigs["docs"],
             "depends_on": ["frontend", "tests"]},
        ],
        **kw,
    )  # fmt: skip


def legs(convoy) -> dict[str, Leg]:
    return {leg.key: leg for leg in convoy.legs.select_related("rig")}


def states(convoy) -> dict[str, str]:
    return {key: leg.state for key, leg in legs(convoy).items()}


def errors_of(exc: pytest.ExceptionInfo) -> dict[str, str]:
    return {k: " ".join(v) for k, v in exc.value.message_dict.items()}


# --- create: validation ---------------------------------------------------------------------


def test_create_writes_legs_and_dependencies(repo):
    convoy = auth_convoy(repo)
    assert convoy.state == Convoy.State.DRAFT
    assert convoy.slug == "build-the-authentication-system"
    assert list(convoy.legs.order_by("position").values_list("key", flat=True)) == [
        "api",
        "frontend",
        "tests",
        "docs",
    ]
    docs = legs(convoy)["docs"]
    assert {d.key for d in docs.depends_on.all()} == {"frontend", "tests"}
    assert legs(convoy)["tests"].scope == ["tests/**"]
    assert Event.objects.filter(kind="convoy.created", convoy_id=convoy.pk).exists()


@pytest.mark.parametrize(
    ("deps", "cycle"),
    [
        ({"api": ["api"]}, "api -> api"),
        ({"api": ["docs"], "docs": ["api"]}, "api -> docs -> api"),
        ({"api": ["tests"], "tests": ["docs"], "docs": ["api"]}, "api -> tests -> docs -> api"),
    ],
    ids=["self", "direct", "transitive"],
)
def test_create_refuses_cycles_naming_them(repo, deps, cycle):
    spec = [
        {"key": key, "title": key, "rig": live_rig(repo), "depends_on": deps.get(key, [])}
        for key in ("api", "tests", "docs")
    ]
    with pytest.raises(ValidationError) as exc:
        services.convoy_create(title="t", repository=repo, target_branch="main", legs=spec)
    [(field, message)] = errors_of(exc).items()
    assert field.endswith(".depends_on")
    assert f"dependency cycle: {cycle}." in message
    assert not Convoy.objects.exists() and not Leg.objects.exists()


def test_create_refuses_unknown_legs_rigs_and_agents_before_writing(repo):
    other_repo_rig = factories.rig(state=Rig.State.READY)
    dead = live_rig(repo, state=Rig.State.ARCHIVED)
    good = live_rig(repo)
    spec = [
        {"key": "api", "title": "API", "rig": good, "depends_on": ["nope"]},
        {"key": "ui", "title": "UI", "rig": 999_999},
        {"key": "db", "title": "DB", "rig": other_repo_rig},
        {"key": "ops", "title": "Ops", "agent": "ghost"},
        {"key": "docs", "title": "Docs", "rig": dead},
        {"key": "both", "title": "Both", "rig": good, "agent": good.agent},
        {"key": "Bad Key", "title": ""},
        {"key": "api", "title": "again", "rig": good},
    ]
    with pytest.raises(ValidationError) as exc:
        services.convoy_create(title="t", repository=repo, target_branch="main", legs=spec)
    errors = errors_of(exc)
    assert "unknown leg 'nope'" in errors["legs[0].depends_on"]
    assert "unknown rig 999999" in errors["legs[1].rig"]
    assert f"belongs to repository {other_repo_rig.repository.name}" in errors["legs[2].rig"]
    assert "unknown agent 'ghost'" in errors["legs[3].agent"]
    assert "archived" in errors["legs[4].rig"]
    assert "not both" in errors["legs[5].rig"]
    assert "not a valid slug" in errors["legs[6].key"]
    assert "needs a title" in errors["legs[6].title"]
    assert "duplicate key 'api'" in errors["legs[7].key"]
    assert not Convoy.objects.exists()


def test_create_refuses_a_rig_busy_with_another_convoy(repo):
    first = auth_convoy(repo)
    services.convoy_launch(convoy=first)
    busy = legs(first)["api"].rig
    with pytest.raises(ValidationError) as exc:
        services.convoy_create(
            title="other", repository=repo, legs=[{"key": "x", "title": "x", "rig": busy}]
        )
    assert "busy with leg api" in errors_of(exc)["legs[0].rig"]


def test_create_refuses_bad_convoy_fields(repo):
    factories.convoy(slug="taken", repository=repo)
    with pytest.raises(ValidationError) as exc:
        services.convoy_create(
            title=" ", repository=repo, target_branch="bad..branch", slug="taken", legs=[]
        )
    assert set(errors_of(exc)) == {"title", "target_branch", "slug"}


# --- waves and roll-up ----------------------------------------------------------------------


def test_waves_are_topological_levels(repo):
    convoy = auth_convoy(repo)
    waves = convoy_waves(convoy.legs.all())
    assert [[leg.key for leg in wave] for wave in waves] == [
        ["api"],
        ["frontend", "tests"],
        ["docs"],
    ]


def test_rollup_in_three_queries(repo, django_assert_max_num_queries):
    convoy = auth_convoy(repo)
    services.convoy_launch(convoy=convoy)
    with django_assert_max_num_queries(3):
        rollup = convoy_rollup(convoy)
    assert rollup["waves"] == [["api"], ["frontend", "tests"], ["docs"]]
    assert rollup["progress"] == {"landed": 0, "total": 4, "percent": 0}
    assert rollup["by_state"] == {"ready": 1, "pending": 3}
    blocked = {b["leg"]: b["reasons"] for b in rollup["blocked"]}
    assert blocked == {
        "frontend": ["waits for leg api (ready)"],
        "tests": ["waits for leg api (ready)"],
        "docs": ["waits for leg frontend (pending)", "waits for leg tests (pending)"],
    }
    assert [leg["depends_on"] for leg in rollup["legs"]] == [
        [],
        ["api"],
        ["api"],
        ["frontend", "tests"],
    ]


# --- launch ---------------------------------------------------------------------------------


def test_launch_provisions_missing_rigs_and_hands_wave_one(repo):
    agent = factories.agent(name="claude-api")
    existing = live_rig(repo, slug="ui")
    convoy = services.convoy_create(
        title="Auth",
        repository=repo,
        legs=[
            {"key": "api", "title": "API", "agent": "claude-api", "scope": ["api/**"]},
            {"key": "ui", "title": "UI", "rig": existing, "depends_on": ["api"]},
        ],
    )
    services.convoy_launch(convoy=convoy)
    assert convoy.state == Convoy.State.LAUNCHED and convoy.launched_at
    api = legs(convoy)["api"]
    assert api.rig.agent == agent
    assert api.rig.state == Rig.State.REQUESTED  # provisioned later by a worker
    assert api.rig.slug == "auth-api" and api.rig.branch == "rig/auth-api"
    assert api.rig.scope == ["api/**"]
    assert states(convoy) == {"api": "ready", "ui": "pending"}
    note = Notification.objects.get(rig=api.rig)
    assert note.kind == K.ASSIGNED and "Leg api" in note.summary
    assert not Notification.objects.filter(rig=existing).exists()
    kinds = list(Event.objects.filter(convoy_id=convoy.pk).values_list("kind", flat=True))
    assert "convoy.state" in kinds and "leg.state" in kinds and "notification.new" in kinds


def test_launch_twice_is_refused(repo):
    convoy = auth_convoy(repo)
    services.convoy_launch(convoy=convoy)
    with pytest.raises(IllegalTransition):
        services.convoy_launch(convoy=convoy)


def test_launch_moves_leg_pool_beads_into_the_new_rig(repo):
    factories.agent(name="worker")
    convoy = services.convoy_create(
        title="Pool", repository=repo, legs=[{"key": "api", "title": "API", "agent": "worker"}]
    )
    leg = legs(convoy)["api"]
    bead = services.bead_create(title="write endpoint", leg=leg)
    assert bead.rig is None and bead.convoy == convoy
    services.convoy_launch(convoy=convoy)
    bead.refresh_from_db()
    assert bead.rig == legs(convoy)["api"].rig


# --- landing --------------------------------------------------------------------------------


def test_leg_lands_only_when_its_rig_work_is_merged(repo):
    convoy = auth_convoy(repo)
    services.convoy_launch(convoy=convoy)
    api = legs(convoy)["api"]
    bead = services.bead_create(title="endpoint", leg=api)
    services.bead_close(bead=bead)  # beads closed: not landed
    assert states(convoy)["api"] == "ready"
    # merged somewhere else: not landed
    land(rig=api.rig, target_branch="release")
    assert states(convoy)["api"] == "ready"
    # another rig merged: not landed
    land(rig=legs(convoy)["tests"].rig, target_branch="main")
    assert states(convoy)["api"] == "ready"

    mr = land(rig=api.rig, target_branch="main")
    api.refresh_from_db()
    assert api.state == Leg.State.LANDED and api.landed_merge_request == mr and api.landed_at
    assert states(convoy) == {
        "api": "landed",
        "frontend": "ready",
        "tests": "ready",
        "docs": "pending",
    }
    unblocked = Notification.objects.get(rig=legs(convoy)["frontend"].rig, kind=K.UNBLOCKED)
    assert unblocked.summary.startswith("You are unblocked: leg frontend")
    assert unblocked.changes["landed"] == ["api"]
    assert Event.objects.filter(kind="notification.new", rig_id=unblocked.rig.pk).exists()


def test_convoy_lands_when_every_leg_landed_and_reopens_with_a_new_leg(repo):
    convoy = auth_convoy(repo)
    services.convoy_launch(convoy=convoy)
    for key in ("api", "frontend", "tests"):
        land(rig=legs(convoy)[key].rig, target_branch="main")
        convoy.refresh_from_db()
        assert convoy.state == Convoy.State.LAUNCHED
    land(rig=legs(convoy)["docs"].rig, target_branch="main")
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LANDED and convoy.landed_at
    assert convoy_rollup(convoy)["progress"] == {"landed": 4, "total": 4, "percent": 100}

    deploy_rig = live_rig(repo, slug="deploy")
    leg = services.convoy_leg_add(
        convoy=convoy,
        leg={"key": "deploy", "title": "Deploy", "rig": deploy_rig, "depends_on": ["api"]},
    )
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LAUNCHED and convoy.landed_at is None
    assert leg.state == Leg.State.READY  # its dependency has landed already
    assert Notification.objects.filter(rig=deploy_rig, kind=K.UNBLOCKED).exists()
    land(rig=deploy_rig, target_branch="main")
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LANDED


def test_leg_add_validates_against_existing_legs(repo):
    convoy = auth_convoy(repo)
    with pytest.raises(ValidationError) as exc:
        services.convoy_leg_add(
            convoy=convoy,
            leg={"key": "api", "title": "x", "rig": live_rig(repo), "depends_on": ["nope"]},
        )
    errors = errors_of(exc)
    assert "already has a leg 'api'" in errors["legs[4].key"]
    assert "unknown leg 'nope'" in errors["legs[4].depends_on"]


def test_landing_merges_in_one_batch_land_every_leg(repo):
    from tests.convoys.helpers import land_many

    convoy = auth_convoy(repo)
    services.convoy_launch(convoy=convoy)
    land(rig=legs(convoy)["api"].rig, target_branch="main")
    rigs = [legs(convoy)[k].rig for k in ("frontend", "tests")]
    land_many([(r, r.branch) for r in rigs], repository=repo, target_branch="main")
    assert states(convoy)["docs"] == "ready"


# --- integration branch ---------------------------------------------------------------------


def test_integration_branch_legs_merge_into_it_and_the_convoy_lands_as_one_merge(repo):
    convoy = auth_convoy(repo, integration=True, slug="auth")
    services.convoy_launch(convoy=convoy)
    api = legs(convoy)["api"]
    assert merge_target_for_rig(api.rig) == "convoy/auth"
    assert merge_target_for_rig(live_rig(repo)) == "main"  # a rig with no leg

    land(rig=api.rig, target_branch="main")  # the wrong target: does not count
    assert states(convoy)["api"] == "ready"
    for key in ("api", "frontend", "tests"):
        land(rig=legs(convoy)[key].rig, target_branch="convoy/auth")
    note = Notification.objects.get(rig=legs(convoy)["docs"].rig, kind=K.UNBLOCKED)
    assert "Sync your rig with convoy/auth" in note.action
    assert not MergeRequest.objects.filter(source_branch="convoy/auth").exists()

    land(rig=legs(convoy)["docs"].rig, target_branch="convoy/auth")
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LANDING
    landing = convoy.landing_merge_request
    assert (landing.source_branch, landing.target_branch, landing.rig) == (
        "convoy/auth",
        "main",
        None,
    )
    assert landing.state == MergeRequest.State.QUEUED
    assert Event.objects.filter(kind="convoy.landing_queued", convoy_id=convoy.pk).exists()

    land_convoy_branch(convoy, landing)
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LANDED and convoy.landed_at


def test_integration_landing_that_fails_blocks_the_convoy_and_can_be_retried(repo):
    from rigs.services import merge_request_finish

    convoy = auth_convoy(repo, integration=True, slug="auth")
    services.convoy_launch(convoy=convoy)
    for key in ("api", "frontend", "tests", "docs"):
        land(rig=legs(convoy)[key].rig, target_branch="convoy/auth")
    convoy.refresh_from_db()
    landing = convoy.landing_merge_request
    MergeRequest.objects.filter(pk=landing.pk).update(state=MergeRequest.State.TESTING)
    landing.refresh_from_db()
    merge_request_finish(merge_request=landing, to=MergeRequest.State.FAILED, reason="gate failed")
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.BLOCKED
    assert convoy_rollup(convoy)["landing_merge_request"]["state"] == "failed"

    services.convoy_landing_retry(convoy=convoy)
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LANDING
    assert convoy.landing_merge_request != landing
    land_convoy_branch(convoy, convoy.landing_merge_request)
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LANDED


def test_leg_added_while_integration_branch_lands_waits_for_the_new_leg(repo):
    convoy = services.convoy_create(
        title="Small",
        slug="small",
        repository=repo,
        use_integration_branch=True,
        legs=[{"key": "api", "title": "API", "rig": live_rig(repo)}],
    )
    services.convoy_launch(convoy=convoy)
    land(rig=legs(convoy)["api"].rig, target_branch="convoy/small")
    convoy.refresh_from_db()
    first = convoy.landing_merge_request
    late = live_rig(repo)
    services.convoy_leg_add(convoy=convoy, leg={"key": "docs", "title": "Docs", "rig": late})
    land_convoy_branch(convoy, first)
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LAUNCHED and convoy.landing_merge_request is None
    land(rig=late, target_branch="convoy/small")
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LANDING and convoy.landing_merge_request != first


# --- derived state: blocked, landing; following the rig -------------------------------------


def test_blocked_when_no_leg_can_move(repo):
    convoy = auth_convoy(repo)
    services.convoy_launch(convoy=convoy)
    api_rig = legs(convoy)["api"].rig
    rig_transition(rig=api_rig, to=Rig.State.ARCHIVED, reason="torn down")
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.BLOCKED
    reason = Event.objects.filter(kind="convoy.state", convoy_id=convoy.pk).last().payload["reason"]
    assert f"api: rig {api_rig.slug} is archived" in reason
    assert {b["leg"] for b in convoy_rollup(convoy)["blocked"]} == {
        "api",
        "frontend",
        "tests",
        "docs",
    }


def test_leg_follows_its_rig_and_convoy_is_landing_when_all_merge(repo):
    convoy = services.convoy_create(
        title="One", repository=repo, legs=[{"key": "api", "title": "API", "rig": live_rig(repo)}]
    )
    services.convoy_launch(convoy=convoy)
    rig = legs(convoy)["api"].rig
    rig_transition(rig=rig, to=Rig.State.WORKING)
    assert states(convoy) == {"api": "working"}
    rig_transition(rig=rig, to=Rig.State.MERGING)
    assert states(convoy) == {"api": "merging"}
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LANDING
    rig_transition(rig=rig, to=Rig.State.WORKING)  # the merge failed: back to work
    convoy.refresh_from_db()
    assert states(convoy) == {"api": "working"} and convoy.state == Convoy.State.LAUNCHED


def test_cancel_cancels_open_legs(repo):
    convoy = auth_convoy(repo)
    services.convoy_launch(convoy=convoy)
    land(rig=legs(convoy)["api"].rig, target_branch="main")
    services.convoy_cancel(convoy=convoy, reason="descoped")
    assert convoy.state == Convoy.State.CANCELLED
    assert states(convoy) == {
        "api": "landed",
        "frontend": "cancelled",
        "tests": "cancelled",
        "docs": "cancelled",
    }
    with pytest.raises(ValidationError):
        services.convoy_leg_add(
            convoy=convoy, leg={"key": "x", "title": "x", "rig": live_rig(repo)}
        )


def test_pending_leg_merged_early_does_not_land(repo):
    convoy = auth_convoy(repo)
    services.convoy_launch(convoy=convoy)
    land(rig=legs(convoy)["docs"].rig, target_branch="main")
    assert states(convoy)["docs"] == "pending"
    assert LegDependency.objects.filter(leg__convoy=convoy).count() == 4
