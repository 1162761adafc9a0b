"""The demo a newcomer sees on `make run`: a sample repository and the article's convoy.

`demo_seed` writes the sample app (`demo/sample_app/start/`: tokens API, login page, tests, docs,
deployment notes) into a new bare repository, registers it with a fast real gate, creates one
scripted agent per leg and the convoy "Build the authentication system" with the legs and beads
of `demo.plan`, and launches it: the runner then starts each leg's scripted agent as the leg is
handed out, and the convoy runs to landed.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction

from convoys import services as convoy_services
from convoys.models import Bead, Convoy, Leg
from demo.plan import CONVOY_DESCRIPTION, CONVOY_TITLE, LEGS, SAMPLE_COMMITS, LegPlan
from rigs import git
from rigs import services as rig_services
from rigs.models import Agent, Repository

SAMPLE_NAME = "sample-app"
DEFAULT_PACE = 1.5  # seconds between a scripted agent's steps: slow enough to watch
# Real and fast: every merge candidate must at least compile.
GATE_COMMAND = "python3 -m compileall -q src tests"


def demo_root() -> Path:
    """Where the sample repository goes: `<DATA_DIR>/repositories`, or the first repository root
    when the settings do not allow that."""
    preferred = (Path(settings.DATA_DIR) / "repositories").resolve()
    roots = [Path(root).resolve() for root in settings.GASTOWN_REPOSITORY_ROOTS]
    if not roots or any(preferred.is_relative_to(root) for root in roots):
        return preferred
    return roots[0]


def _free_location() -> tuple[str, Path]:
    """A repository name and path nothing uses yet (on disk, in the database, or as a worktree
    directory left by an earlier database): `sample-app`, then `sample-app-2`, ..."""
    root = demo_root()
    worktrees = Path(settings.GASTOWN_WORKTREE_ROOT)
    for n in range(1, 1000):
        name = SAMPLE_NAME if n == 1 else f"{SAMPLE_NAME}-{n}"
        path = root / f"{name}.git"
        taken = Repository.objects.filter(name=name).exists() or (
            Repository.objects.filter(path=str(path)).exists()
        )
        if not taken and not path.exists() and not (worktrees / name).exists():
            return name, path
    raise RuntimeError(f"no free name for the sample repository under {root}")


def sample_repository_create(path: Path) -> str:
    """Make the bare sample repository at `path` with its history on `main`; returns the tip."""
    git.init_repository(path, initial_branch="main", bare=True)
    tip = None
    for message, files in SAMPLE_COMMITS:
        tip = git.commit_files(path, files, message, parent=tip)
    assert tip is not None
    git.update_ref(path, "refs/heads/main", tip, git.ZERO_OID, message="gastown: demo seed")
    return tip


def pace_command(pace: float) -> str:
    return f"gastown-agent --pace {pace:g}"


def _agent(name: str, pace: float | None) -> Agent:
    """The leg's scripted agent, made at `pace` (default DEFAULT_PACE) when missing. An
    existing one is reused: a scripted one takes `pace` when one is given (so `seed_demo --force
    --pace 3` paces the agents it reuses; without --pace they keep theirs), any other is left as
    it is. Through the service, so the change is an `agent.updated` event like any edit."""
    existing = Agent.objects.filter(name=name).first()
    if existing is None:
        agent, _token = rig_services.agent_create(
            name=name,
            runtime=Agent.Runtime.SCRIPTED,
            runtime_command=pace_command(DEFAULT_PACE if pace is None else pace),
        )
        return agent
    if pace is not None and existing.runtime == Agent.Runtime.SCRIPTED:
        rig_services.agent_update(agent=existing, runtime_command=pace_command(pace))
    return existing


def _beads_create(leg: Leg, plan: LegPlan) -> list[Bead]:
    """The leg's beads, waiting in the convoy's pool until launch moves them into its rig."""
    beads: dict[str, Bead] = {}
    for bead_plan in plan.beads:
        beads[bead_plan.key] = convoy_services.bead_create(
            leg=leg,
            title=bead_plan.title,
            description=bead_plan.description(),
            priority=bead_plan.priority,
            type=bead_plan.type,
            labels=["demo", plan.key],
        )
        for key in bead_plan.after:
            convoy_services.bead_dependency_add(bead=beads[bead_plan.key], depends_on=beads[key])
    return list(beads.values())


def demo_seed(*, pace: float | None = None, launch: bool = True) -> Convoy:
    """Make the sample repository, register it, create the agents, the convoy and its beads, and
    launch it (the runner then starts each leg's scripted agent as the leg is handed out).

    `pace`: seconds the scripted agents pause between steps (so people can watch): new agents
    get it (else DEFAULT_PACE), existing scripted demo agents take it when it is given. Runs
    already queued or running keep the command they were started with. The git work happens
    before the one database transaction; if that fails, the new repository is removed.
    """
    if pace is not None and not (math.isfinite(pace) and pace >= 0):
        raise ValueError(f"pace must be a non-negative number of seconds, not {pace!r}")
    name, path = _free_location()
    sample_repository_create(path)
    try:
        with transaction.atomic():
            repository = rig_services.repository_register(
                name=name, path=str(path), target_branch="main", gate_command=GATE_COMMAND
            )
            for plan in LEGS:
                _agent(plan.agent_name, pace)
            convoy = convoy_services.convoy_create(
                title=CONVOY_TITLE,
                description=CONVOY_DESCRIPTION,
                repository=repository,
                legs=[
                    {
                        "key": plan.key,
                        "title": plan.title,
                        "description": plan.description,
                        "agent": plan.agent_name,
                        "scope": plan.scope,
                        "watch": plan.watch,
                        "depends_on": plan.depends_on,
                    }
                    for plan in LEGS
                ],
            )
            legs = {leg.key: leg for leg in convoy.legs.all()}
            for plan in LEGS:
                _beads_create(legs[plan.key], plan)
            if launch:
                convoy = convoy_services.convoy_launch(convoy=convoy)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return convoy


def demo_agents_pace() -> dict[str, list[str]]:
    """The demo's agents by what they run (`gastown-agent --pace 3` -> [demo-api, ...]), to say
    what a seed left them with."""
    paces: dict[str, list[str]] = {}
    agents = Agent.objects.filter(name__in=[plan.agent_name for plan in LEGS]).order_by("name")
    for agent in agents:
        paces.setdefault(agent.runtime_command or agent.runtime, []).append(agent.name)
    return paces


def demo_is_needed() -> bool:
    """Only an empty installation gets the demo: no convoy and no repository yet."""
    return not (Convoy.objects.exists() or Repository.objects.exists())


def demo_seed_if_empty(*, pace: float | None = None, launch: bool = True) -> Convoy | None:
    """`demo_seed` on an empty installation; None (and nothing done) otherwise."""
    if not demo_is_needed():
        return None
    return demo_seed(pace=pace, launch=launch)
