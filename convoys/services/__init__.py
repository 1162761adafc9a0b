"""Writes for convoys, legs and beads: one transaction each, events included.

Services take keyword-only arguments, run in `transaction.atomic`, and append their Event rows
in the same transaction. The package re-exports every public service, so callers use
`from convoys import services` / `services.bead_claim(...)`.

- `convoys.services.convoys`: convoy_create, convoy_launch, convoy_leg_add, convoy_cancel,
  convoy_refresh_state, convoy_landing_merged, convoy_landing_retry, leg_land, leg_follow_rig,
  convoy_transition, leg_transition, rig_merge_request (OpenWork, WorkFinished).
- `convoys.services.beads`: bead_create, bead_edit, bead_claim (ClaimConflict,
  BeadWorkFinished), bead_close, bead_reopen, bead_transition, bead_update.
- `convoys.services.bead_graph`: bead_dependency_add (DependencyCycle), bead_dependency_remove,
  bead_dependency_path.
- `convoys.services.leases`: claims are leases: bead_leases_renew, bead_leases_expire (the
  periodic sweep), bead_claims_end_for_run (a run ended); CLAIM_RUN_FINDERS (the runner says
  which run holds a claim).
- `convoys.services.coordination`: message_send (message_recipients), escalation_raise,
  notice_answer, rig_turn_end, bead_comment_add, bead_release (NoRecipient, NotClaimed,
  NotAQuestion, AlreadyAnswered): rigs talk to each other and to people.
- `convoys.services.plans`: convoy_import (PlanInvalid), plan_check: a convoy from a Markdown
  plan (`convoys.plan_import`).
- `convoys.services.follow`: what the receivers of the rigs' signals call:
  convoys_follow_rig_state, convoys_follow_merge_request, convoys_follow_merge_landed.

Notifications are sent and acknowledged by `notifications.services`; cascades follow the rigs'
signals in `cascades`.
"""

from convoys.services.bead_graph import (
    DependencyCycle,
    bead_dependency_add,
    bead_dependency_path,
    bead_dependency_remove,
)
from convoys.services.beads import (
    BeadWorkFinished,
    ClaimConflict,
    bead_claim,
    bead_close,
    bead_create,
    bead_edit,
    bead_reopen,
    bead_transition,
    bead_update,
)
from convoys.services.convoys import (
    OpenWork,
    WorkFinished,
    convoy_cancel,
    convoy_create,
    convoy_landing_merged,
    convoy_landing_retry,
    convoy_launch,
    convoy_leg_add,
    convoy_refresh_state,
    convoy_transition,
    leg_follow_rig,
    leg_land,
    leg_transition,
    rig_merge_request,
)
from convoys.services.follow import (
    convoys_follow_merge_landed,
    convoys_follow_merge_request,
    convoys_follow_rig_state,
)
from convoys.services.leases import (
    bead_claims_end_for_run,
    bead_leases_expire,
    bead_leases_renew,
)
from convoys.services.plans import PlanInvalid, convoy_import, plan_check

__all__ = [
    "BeadWorkFinished",
    "ClaimConflict",
    "DependencyCycle",
    "OpenWork",
    "PlanInvalid",
    "WorkFinished",
    "bead_claim",
    "bead_claims_end_for_run",
    "bead_close",
    "bead_create",
    "bead_dependency_add",
    "bead_dependency_path",
    "bead_dependency_remove",
    "bead_edit",
    "bead_leases_expire",
    "bead_leases_renew",
    "bead_reopen",
    "bead_transition",
    "bead_update",
    "convoy_cancel",
    "convoy_create",
    "convoy_import",
    "convoy_landing_merged",
    "convoy_landing_retry",
    "convoy_launch",
    "convoy_leg_add",
    "convoy_refresh_state",
    "convoy_transition",
    "convoys_follow_merge_landed",
    "convoys_follow_merge_request",
    "convoys_follow_rig_state",
    "leg_follow_rig",
    "leg_land",
    "leg_transition",
    "plan_check",
    "rig_merge_request",
]
