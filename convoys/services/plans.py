"""A convoy imported from a Markdown plan (`convoys.plan_import`): checked whole, every error
with its line, then created with its beads (and launched, if asked) in one transaction."""

import re

from django.core.exceptions import ValidationError
from django.db import transaction

from common.errors import Refusal
from convoys.models import Bead, Convoy
from convoys.plan_import import PlanError, plan_parse
from convoys.services.beads import bead_close, bead_create
from convoys.services.convoys import convoy_create, convoy_launch
from convoys.services.legs_input import legs_validate
from rigs.models import Repository, Rig

CLOSED_REASON = "done before the import (checked in the plan)"


PLAN_ERRORS_SHOWN = 100  # a broken file (a binary, a wrong format) is not a 5,000-line answer


class PlanInvalid(Refusal):
    """A plan with errors: all of them, each with its line; nothing was created."""

    code = "invalid_plan"
    field = "plan"
    status = 400

    def __init__(self, errors: list[PlanError]) -> None:
        everything = sorted(errors, key=lambda e: e.line)
        self.errors = everything[:PLAN_ERRORS_SHOWN]
        self.count = count = len(everything)
        more = count - len(self.errors)
        super().__init__(
            f"the plan has {count} error{'s' if count != 1 else ''}; nothing was created.\n"
            + "\n".join(str(e) for e in self.errors)
            + (f"\n… and {more} more (the first {PLAN_ERRORS_SHOWN} are shown)." if more else "")
        )

    def as_body(self) -> dict:
        body = super().as_body()
        body["error"]["errors"] = [e.as_dict() for e in self.errors]
        body["error"]["count"] = self.count
        return body


def plan_check(*, repository: Repository, plan: str):
    """The parsed plan and its legs as `convoy_create` takes them (rigs resolved), or
    PlanInvalid listing every error: the parser's, then the legs' (`legs_validate`, the API's
    rules) mapped back to their lines. Reads only."""
    parsed, errors = plan_parse(plan)
    legs = [leg.as_input() for leg in parsed.legs]
    slugs = {leg.rig for leg in parsed.legs if leg.rig}
    rigs = (
        {rig.slug: rig for rig in Rig.objects.filter(repository=repository, slug__in=slugs)}
        if slugs
        else {}
    )
    known = ""  # the repository's live rigs, read once for the first unknown one
    for index, (item, leg) in enumerate(zip(parsed.legs, legs, strict=True)):
        if not item.rig:
            continue
        if item.rig in rigs:
            leg["rig"] = rigs[item.rig]
        else:
            del leg["rig"]
            known = known or _known_rigs(repository)
            errors.append(
                PlanError(
                    item.lines["rig"],
                    f"{_leg_key(parsed, f'legs[{index}]')}unknown rig '{item.rig}' in "
                    f"repository {repository.name} ({known}).",
                    f"legs[{index}].rig",
                )
            )
    taken = {e.field for e in errors if e.field.startswith("legs[")}
    try:
        legs_validate(repository=repository, legs=legs, existing={}, convoy=None)
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            if name not in taken:
                message = _leg_key(parsed, name) + " ".join(messages)
                # `legs[0]` in a message means little in a plan: say its line
                message = re.sub(
                    r"legs\[(\d+)\]", lambda m: f"the leg on line {parsed.line_of(m[0])}", message
                )
                errors.append(PlanError(parsed.line_of(name), message, name))
    if errors:
        raise PlanInvalid(errors)
    return parsed, legs


def _known_rigs(repository: Repository) -> str:
    slugs = list(
        Rig.objects.filter(repository=repository, state__in=Rig.LIVE_STATES)
        .order_by("slug")
        .values_list("slug", flat=True)[:11]
    )
    if not slugs:
        return "it has no live rig; name an agent with `Agent:` instead"
    more = ", …" if len(slugs) > 10 else ""
    return f"its live rigs: {', '.join(slugs[:10])}{more}"


def _leg_key(parsed, name: str) -> str:
    """`leg api: ` for an error about a leg of the plan (the line says where, this says who)."""
    if name.startswith("legs["):
        index = int(name[5 : name.index("]")])
        if index < len(parsed.legs) and parsed.legs[index].key:
            return f"leg {parsed.legs[index].key}: "
    return ""


@transaction.atomic
def convoy_import(
    *, repository: Repository, plan: str, launch: bool = False, created_by=None
) -> tuple[Convoy, list[Bead]]:
    """A draft convoy from a Markdown plan, with each leg's `- [ ]` tasks as open beads in the
    leg's rig (or the convoy's pool until its rig is provisioned) and `- [x]` tasks as closed
    ones; launched too with `launch`. Every error of the plan is raised at once (PlanInvalid,
    400) and nothing is written: one transaction, a failed launch included."""
    parsed, legs = plan_check(repository=repository, plan=plan)
    convoy = convoy_create(
        title=parsed.title,
        description=parsed.description,
        repository=repository,
        legs=legs,
        created_by=created_by,
    )
    by_key = {leg.key: leg for leg in convoy.legs.select_related("rig", "convoy")}
    beads = []
    for item in parsed.beads:
        bead = bead_create(
            title=item.title,
            leg=by_key[parsed.legs[item.leg].key],
            description=item.description,
        )
        if item.closed:
            bead_close(bead=bead, reason=CLOSED_REASON)
        beads.append(bead)
    if launch:
        convoy = convoy_launch(convoy=convoy)
    return convoy, beads
