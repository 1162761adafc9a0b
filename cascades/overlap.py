"""Trigger 2, a rig's branch moved: the overlap radar warns both rigs before any merge conflict
exists. Uses what the rigs' syncs stored (their changed files); runs inside the transaction
that recorded the sync."""

import uuid

from cascades.watch import path_matches, rig_watch_patterns
from convoys.selectors import rig_current_leg
from notifications.models import Notification
from notifications.services import notification_send
from rigs.models import Rig

K = Notification.Kind
SEV = Notification.Severity


def _paths_of(rig: Rig) -> set[str]:
    return {f.get("path") for f in rig.changed_files or [] if isinstance(f, dict) and f.get("path")}


def cascade_overlap(*, rig: Rig) -> list[Notification]:
    """Both rigs edit the same files, or one edits what the other watches: warn both, before
    any merge conflict exists."""
    mine = _paths_of(rig)
    if not mine:
        return []
    my_leg = rig_current_leg(rig)
    my_watch = rig_watch_patterns(rig, my_leg)
    sent = []
    others = (
        Rig.objects.filter(repository_id=rig.repository_id, state__in=Rig.LIVE_STATES)
        .exclude(pk=rig.pk)
        .order_by("id")
    )
    for other in others:
        theirs = _paths_of(other)
        other_leg = rig_current_leg(other)
        both = sorted(mine & theirs)
        i_touch_their_watch = sorted(
            p for p in mine if path_matches(p, rig_watch_patterns(other, other_leg))
        )
        they_touch_my_watch = sorted(p for p in theirs if path_matches(p, my_watch))
        if not (both or i_touch_their_watch or they_touch_my_watch):
            continue
        cascade = uuid.uuid4()
        for target, partner, partner_leg, files in (
            (rig, other, other_leg, both or they_touch_my_watch or i_touch_their_watch),
            (other, rig, my_leg, both or i_touch_their_watch or they_touch_my_watch),
        ):
            leg_text = f" (leg '{partner_leg.title}')" if partner_leg else ""
            note = notification_send(
                rig=target,
                kind=K.OVERLAP,
                severity=SEV.WARNING,
                summary=f"Overlapping work with rig {partner.slug}{leg_text}: "
                + ", ".join(files[:5]),
                action=f"Coordinate with {partner.slug} before changing "
                + ", ".join(files[:5])
                + " further; agree who owns them.",
                changes={
                    "rig": partner.slug,
                    "leg": partner_leg.title if partner_leg else None,
                    "files": files,
                    "same_files": both,
                },
                source_rig=rig,
                cascade=cascade,
                convoy_id=rig_current_leg(target).convoy_id if rig_current_leg(target) else None,
            )
            if note is not None:
                sent.append(note)
    return sent
