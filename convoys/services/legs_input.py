"""Checking the legs of a convoy request (create, or add a leg) before anything is written."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from common.params import id_or_none
from convoys.models import Convoy, Leg, LegDependency
from convoys.selectors import DEAD_RIG_STATES
from convoys.validators import validate_acceptance
from events.services import event_append
from rigs.models import Agent, Repository, Rig
from rigs.validators import validate_globs, validate_slug


@dataclass
class LegSpec:
    """One leg of a create/add request, checked and resolved (rig and agent loaded)."""

    index: int
    key: str
    title: str
    description: str = ""
    acceptance: list[str] = field(default_factory=list)
    rig: Rig | None = None
    agent: Agent | None = None
    scope: list[str] = field(default_factory=list)
    watch: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)


def _as_str_list(value: Any) -> list[str] | None:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path of keys (`[a, b, a]`), or None. Iterative DFS."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for root in graph:
        if color[root] != WHITE:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        color[root] = GREY
        while stack:
            node, i = stack[-1]
            children = graph.get(node, [])
            if i < len(children):
                stack[-1] = (node, i + 1)
                child = children[i]
                if color.get(child) == GREY:
                    return [*path[path.index(child) :], child]
                if color.get(child) == WHITE:
                    color[child] = GREY
                    stack.append((child, 0))
                    path.append(child)
            else:
                color[node] = BLACK
                stack.pop()
                path.pop()
    return None


def busy_legs(rigs: Iterable[Rig], exclude_convoy: Convoy | None) -> dict[int, Leg]:
    """Open legs of launched convoys, by rig: a rig works on one leg at a time (so its merge
    target is never ambiguous)."""
    qs = Leg.objects.filter(
        rig__in=list(rigs), state__in=Leg.OPEN_STATES, convoy__state__in=Convoy.ACTIVE_STATES
    ).select_related("convoy")
    if exclude_convoy is not None:
        qs = qs.exclude(convoy=exclude_convoy)
    return {leg.rig_id: leg for leg in qs}


def legs_validate(
    *,
    repository: Repository,
    legs: Any,
    existing: dict[str, Leg],
    convoy: Convoy | None,
    first_index: int = 0,
    prefix: str = "legs",
) -> list[LegSpec]:
    """Check a list of leg dicts against the repository and the convoy's existing legs.

    Raises one ValidationError naming every bad field (`legs[2].depends_on`), before anything
    is written. Queries: one for the rigs, one for the agents, one for busy rigs.
    """
    if not isinstance(legs, (list, tuple)) or not all(isinstance(leg, dict) for leg in legs):
        raise ValidationError({prefix: "must be a list of legs (objects)."})
    errors: dict[str, str] = {}
    specs: list[LegSpec] = []

    def err(i: int, name: str, message: str) -> None:
        errors.setdefault(f"{prefix}[{i}].{name}" if name else f"{prefix}[{i}]", message)

    known = {
        "key",
        "title",
        "description",
        "acceptance",
        "rig",
        "agent",
        "scope",
        "watch",
        "depends_on",
    }
    rig_ids, agent_names = set(), set()
    for i, raw in enumerate(legs, start=first_index):
        for name in sorted(set(raw) - known):
            err(i, name, f"unknown field '{name}'.")
        rig, agent = raw.get("rig"), raw.get("agent")
        if isinstance(rig, Rig):
            rig_ids.add(rig.pk)
        elif id_or_none(rig) is not None:
            rig_ids.add(id_or_none(rig))
        if isinstance(agent, Agent):
            agent_names.add(agent.name)
        elif isinstance(agent, str):
            agent_names.add(agent)
    rigs = Rig.objects.select_related("repository").in_bulk(rig_ids) if rig_ids else {}
    agents = {a.name: a for a in Agent.objects.filter(name__in=agent_names)} if agent_names else {}

    seen_keys: dict[str, int] = {}
    seen_rigs: dict[int, int] = {}
    for i, raw in enumerate(legs, start=first_index):
        key = raw.get("key")
        try:
            validate_slug(key if isinstance(key, str) else "")
        except ValidationError as exc:
            err(i, "key", exc.messages[0] if key else "a leg needs a key (a slug such as 'api').")
            key = None
        if key is not None:
            if key in existing:
                err(i, "key", f"the convoy already has a leg '{key}'.")
            elif key in seen_keys:
                err(i, "key", f"duplicate key '{key}' (also {prefix}[{seen_keys[key]}]).")
            else:
                seen_keys[key] = i
        title = raw.get("title")
        if not isinstance(title, str) or not title.strip():
            err(i, "title", "a leg needs a title.")
        elif len(title) > 200:
            err(i, "title", "at most 200 characters.")
        description = raw.get("description") or ""
        if not isinstance(description, str):
            err(i, "description", "must be text.")
        acceptance = _as_str_list(raw.get("acceptance"))
        if acceptance is None:
            err(i, "acceptance", "must be a list of short texts (a checklist).")
            acceptance = []
        acceptance = [item.strip() for item in acceptance]
        try:
            validate_acceptance(acceptance)
        except ValidationError as exc:
            err(i, "acceptance", exc.messages[0])

        rig_value, agent_value = raw.get("rig"), raw.get("agent")
        rig = agent = None
        if rig_value not in (None, "") and agent_value not in (None, ""):
            err(i, "rig", "give either a rig or an agent to provision one for, not both.")
        elif rig_value in (None, "") and agent_value in (None, ""):
            err(i, "rig", "a leg needs a rig, or an agent to provision a rig for at launch.")
        elif rig_value not in (None, ""):
            rig_id = rig_value.pk if isinstance(rig_value, Rig) else None
            if rig_id is None:
                rig_id = id_or_none(rig_value)
            rig = rigs.get(rig_id) if rig_id is not None else None
            if rig is None:
                err(i, "rig", f"unknown rig {rig_value!r}.")
            elif rig.repository_id != repository.pk:
                err(
                    i,
                    "rig",
                    f"rig {rig.slug} belongs to repository {rig.repository.name}, "
                    f"not {repository.name}.",
                )
                rig = None
            elif rig.state in DEAD_RIG_STATES:
                err(i, "rig", f"rig {rig.slug} is {rig.state}; it cannot take a leg.")
                rig = None
            elif rig.pk in seen_rigs:
                err(i, "rig", f"rig {rig.slug} already has {prefix}[{seen_rigs[rig.pk]}].")
                rig = None
            else:
                seen_rigs[rig.pk] = i
        else:
            name = agent_value.name if isinstance(agent_value, Agent) else agent_value
            agent = agents.get(name) if isinstance(name, str) else None
            if agent is None:
                err(i, "agent", f"unknown agent {name!r}.")
            elif not agent.is_active:
                err(i, "agent", f"agent {agent.name} is deactivated.")
                agent = None

        globs = {}
        for name in ("scope", "watch"):
            value = _as_str_list(raw.get(name))
            if value is None:
                err(i, name, "must be a list of path globs (strings).")
                continue
            try:
                validate_globs(value)
            except ValidationError as exc:
                err(i, name, exc.messages[0])
            globs[name] = value
        depends_on = _as_str_list(raw.get("depends_on"))
        if depends_on is None:
            err(i, "depends_on", "must be a list of leg keys.")
            depends_on = []
        specs.append(
            LegSpec(
                index=i,
                key=key or "",
                title=(title or "").strip() if isinstance(title, str) else "",
                description=description if isinstance(description, str) else "",
                acceptance=acceptance,
                rig=rig,
                agent=agent,
                scope=globs.get("scope", []),
                watch=globs.get("watch", []),
                depends_on=list(dict.fromkeys(depends_on)),
            )
        )

    # Dependencies: known keys (new legs or the convoy's existing ones), then no cycle.
    all_keys = set(existing) | {s.key for s in specs if s.key}
    for spec in specs:
        unknown = [k for k in spec.depends_on if k not in all_keys]
        if unknown:
            err(
                spec.index,
                "depends_on",
                f"unknown leg {', '.join(repr(k) for k in unknown)}; known legs: "
                f"{', '.join(sorted(all_keys)) or 'none'}.",
            )
    # A cycle among the keys that are known, even beside other errors (a plan's import lists
    # every error at once).
    graph: dict[str, list[str]] = {key: [] for key in existing}
    for key, leg in existing.items():
        graph[key] = [d.key for d in getattr(leg, "_depends_on_legs", [])]
    for spec in specs:
        if spec.key and seen_keys.get(spec.key) == spec.index:  # (a duplicate key: its first)
            graph[spec.key] = [k for k in spec.depends_on if k in all_keys]
    if graph:
        cycle = _find_cycle(graph)
        if cycle:
            in_cycle = [s.index for s in specs if s.key in cycle] or [first_index]
            free = [i for i in in_cycle if f"{prefix}[{i}].depends_on" not in errors]
            where = (free or in_cycle)[0]
            err(where, "depends_on", f"dependency cycle: {' -> '.join(cycle)}.")

    busy = busy_legs([s.rig for s in specs if s.rig], convoy) if not errors else {}
    for spec in specs:
        if spec.rig and spec.rig.pk in busy:
            other = busy[spec.rig.pk]
            err(
                spec.index,
                "rig",
                f"rig {spec.rig.slug} is busy with leg {other.key} of convoy "
                f"'{other.convoy.title}' ({other.state}); a rig works on one leg at a time.",
            )
    if errors:
        raise ValidationError(errors)
    return specs


def legs_write(convoy: Convoy, specs: list[LegSpec], existing: dict[str, Leg]) -> list[Leg]:
    position = max((leg.position for leg in existing.values()), default=-1) + 1
    created = []
    for offset, spec in enumerate(specs):
        created.append(
            Leg.objects.create(
                convoy=convoy,
                key=spec.key,
                title=spec.title,
                description=spec.description,
                acceptance=spec.acceptance,
                rig=spec.rig,
                agent=spec.agent,
                scope=spec.scope,
                watch=spec.watch,
                position=position + offset,
            )
        )
    by_key = {**existing, **{leg.key: leg for leg in created}}
    LegDependency.objects.bulk_create(
        LegDependency(leg=by_key[spec.key], depends_on=by_key[dep])
        for spec in specs
        for dep in spec.depends_on
    )
    for leg, spec in zip(created, specs, strict=True):
        event_append(
            "leg.added",
            {"leg": leg.id, "key": leg.key, "title": leg.title, "depends_on": spec.depends_on},
            repository_id=convoy.repository_id,
            convoy_id=convoy.id,
            rig_id=leg.rig_id,
        )
    return created


def unique_slug(model_qs, base: str, *, max_length: int = 63) -> str:
    base = (base or "convoy")[:max_length].strip("-") or "convoy"
    taken = set(model_qs.filter(slug__startswith=base[:50]).values_list("slug", flat=True))
    if base not in taken:
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[: max_length - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
        n += 1
