"""The demo end to end: the seeded convoy runs to `landed` with a real worker, a real ASGI server
and the scripted agents the runner launches as each leg is handed out."""

import subprocess

import pytest

from convoys.models import Convoy
from demo import plan, seed
from notifications.models import Notification
from runner.models import AgentRun
from tests.rigs.helpers import wait_for

pytestmark = pytest.mark.worker


def git(repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, *args], check=True, capture_output=True, text=True
    ).stdout


def test_demo_convoy_lands_with_every_leg_merged_and_the_cascade_delivered(runner_worker):
    # The worker shares settings.DATA_DIR (and so the repository roots) with this process.
    convoy = seed.demo_seed(pace=0.05)

    def landed() -> bool:
        convoy.refresh_from_db()
        assert convoy.state != Convoy.State.CANCELLED
        return convoy.state == Convoy.State.LANDED

    wait_for(landed, timeout=300, interval=0.5, message="the demo convoy to land")

    path = convoy.repository.path
    # every scripted change replayed in order: (text, whole file?) per path
    expected: dict[str, tuple[str, bool]] = {}
    for leg_plan in plan.LEGS:
        for bead in leg_plan.beads:
            for change in bead.changes:
                if change.mode == "write":
                    expected[change.path] = (change.content, True)
                else:
                    before, whole = expected.get(change.path, ("", False))
                    expected[change.path] = (before + change.content, whole)
    for file, (text, whole) in expected.items():
        on_main = git(path, "show", f"main:{file}")
        assert on_main == text if whole else on_main.endswith(text), f"{file} differs on main"
    # five legs, five merges through the queue onto main
    merges = git(path, "log", "--merges", "--format=%s", "main").splitlines()
    assert len(merges) >= len(plan.LEGS), merges

    legs = {leg.key: leg for leg in convoy.legs.select_related("rig")}
    for key in ("frontend", "tests"):
        assert Notification.objects.filter(
            rig=legs[key].rig, kind=Notification.Kind.INTERFACE_CHANGED
        ).exists(), f"{key} was not told the token format changed"
    assert not Notification.objects.filter(
        rig=legs["deploy"].rig, kind=Notification.Kind.INTERFACE_CHANGED
    ).exists()

    # every agent finished; nothing is left running
    wait_for(
        lambda: not AgentRun.objects.filter(state__in=AgentRun.ACTIVE_STATES).exists(),
        timeout=60,
        message="the agent runs to finish",
    )
    runs = AgentRun.objects.filter(rig__in=[leg.rig for leg in legs.values()])
    assert set(runs.values_list("state", flat=True)) == {AgentRun.State.SUCCEEDED}
