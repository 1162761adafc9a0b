"""Cascades: when one rig's change affects others, tell each affected rig exactly what changed
and what to do about it. Policy only: who is told what, given data that `rigs` read (this
app never runs git and never touches a worktree). It sits above `convoys` (it reads legs and
creates beads) and sends through `notifications`; `receivers.py` connects it to the rigs'
domain signals (after `convoys.receivers`), `tasks.py` runs triggers 1 and 2 in a worker.

Triggers:
1. A merge lands (`merge_landed`; `cascade_merge_landed_later` enqueues `cascade_merge_landed`,
   `landed.py`): per other live rig on that target, a conflict forecast or "base moved",
   "interface changed" for watched paths, "dependencies changed" for manifests; plus follow-up
   beads where the conceptual merge belongs (`follow_ups.py`). The landed change is read once
   through `rigs.landing`; an idle rig is rebased by `rigs.operations.rig_rebase_run`.
2. A rig's branch moves (`branch_updated`; `cascade_overlap_later` enqueues `cascade_overlap`,
   `overlap.py`): the overlap radar forecasts, line by line, whether the rig's tip and each
   other rig's tip that changes the same files would conflict, and tells both sides (one
   notice per pair, updated in place, resolved when the overlap is gone).
3. A merge conflicts or its gate fails (`merge_request_state_changed`; `cascade_merge_refused`,
   `refused.py`): the owning rig is told, with files or the log tail.

What a rig watches and owns, and how landed paths are classified: `watch.py`. (This module
only describes the app: Django imports it before any model exists, so callers import from the
modules, e.g. `from cascades.landed import cascade_merge_landed`.)

Triggers 1 and 2 read git, so they run in a Celery task after the transaction that caused
them commits; trigger 3 uses what is already stored and runs inside that transaction.
"""
