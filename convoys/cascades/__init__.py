"""Cascades: when one rig's change affects others, tell each affected rig exactly what changed
and what to do about it. Policy only: who is told what, given data that `rigs` read (this
package never runs git and never touches a worktree).

Triggers:
1. A merge lands (`cascade_merge_landed`, `landed.py`): per other live rig on that target, a
   conflict forecast or "base moved", "interface changed" for watched paths, "dependencies
   changed" for manifests; plus follow-up beads where the conceptual merge belongs
   (`follow_ups.py`). The landed change is read once through `rigs.landing`; an idle rig is
   rebased by `rigs.operations.rig_rebase_run`.
2. A rig's branch moves (`cascade_overlap`, `overlap.py`): the overlap radar warns both rigs
   before any merge conflict exists.
3. A merge conflicts or its gate fails (`cascade_merge_refused`, `refused.py`): the owning rig
   is told, with files or the log tail.

What a rig watches and owns, and how landed paths are classified: `watch.py`.

Trigger 1 runs in a Celery task after the landing commits; triggers 2 and 3 use what is
already stored and run inside the transaction that caused them.
"""

from convoys.cascades.follow_ups import cascade_follow_ups
from convoys.cascades.landed import ANSWERABLE_KINDS, RigImpact, cascade_merge_landed
from convoys.cascades.overlap import cascade_overlap
from convoys.cascades.refused import cascade_merge_refused
from convoys.cascades.watch import (
    CODE_SUFFIXES,
    DEPLOY_PATTERNS,
    DOC_PATTERNS,
    MANIFEST_PATTERNS,
    TEST_PATTERNS,
    path_matches,
    rig_owns,
    rig_watch_patterns,
    rigs_watching,
)

__all__ = [
    "ANSWERABLE_KINDS",
    "CODE_SUFFIXES",
    "DEPLOY_PATTERNS",
    "DOC_PATTERNS",
    "MANIFEST_PATTERNS",
    "TEST_PATTERNS",
    "RigImpact",
    "cascade_follow_ups",
    "cascade_merge_landed",
    "cascade_merge_refused",
    "cascade_overlap",
    "path_matches",
    "rig_owns",
    "rig_watch_patterns",
    "rigs_watching",
]
