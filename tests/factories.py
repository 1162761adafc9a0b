"""Plain helpers that create valid objects for tests (no git work)."""

import itertools

from convoys.beads import bead_short_id_new
from convoys.models import Bead, Convoy, Leg
from events.models import Event
from notifications.models import Notification, NotificationVersion
from rigs.models import Agent, MergeRequest, Repository, Rig

_seq = itertools.count(1)


def repository(**kw) -> Repository:
    n = next(_seq)
    kw.setdefault("name", f"repo-{n}")
    kw.setdefault("path", f"/tmp/gastown-test-repos/repo-{n}")
    return Repository.objects.create(**kw)


def agent(**kw) -> Agent:
    kw.setdefault("name", f"agent-{next(_seq)}")
    return Agent.objects.create(**kw)


def rig(**kw) -> Rig:
    kw.setdefault("repository", kw.get("repository") or repository())
    slug = kw.setdefault("slug", f"rig-{next(_seq)}")
    kw.setdefault("branch", f"rig/{slug}")
    if "agent" not in kw:
        kw["agent"] = agent()
    return Rig.objects.create(**kw)


def merge_request(**kw) -> MergeRequest:
    r = kw.setdefault("rig", kw.get("rig") or rig())
    kw.setdefault("repository", r.repository)
    kw.setdefault("target_branch", r.repository.target_branch)
    kw.setdefault("source_branch", r.branch)
    kw.setdefault("source_commit", "a" * 40)
    return MergeRequest.objects.create(**kw)


def convoy(**kw) -> Convoy:
    n = next(_seq)
    kw.setdefault("repository", kw.get("repository") or repository())
    kw.setdefault("slug", f"convoy-{n}")
    kw.setdefault("title", f"Convoy {n}")
    kw.setdefault("target_branch", kw["repository"].target_branch)
    return Convoy.objects.create(**kw)


def leg(**kw) -> Leg:
    kw.setdefault("convoy", kw.get("convoy") or convoy())
    key = kw.setdefault("key", f"leg-{next(_seq)}")
    kw.setdefault("title", key)
    return Leg.objects.create(**kw)


def bead(**kw) -> Bead:
    if not any(k in kw for k in ("rig", "convoy", "repository")):
        kw["rig"] = rig()
    kw.setdefault("title", f"bead {next(_seq)}")
    kw.setdefault("short_id", bead_short_id_new())
    return Bead.objects.create(**kw)


def notification(**kw) -> Notification:
    kw.setdefault("rig", kw.get("rig") or rig())
    kw.setdefault("kind", Notification.Kind.INFO)
    n = next(_seq)
    kw.setdefault("summary", f"note {n}")
    kw.setdefault("fingerprint", f"fp-{n}")
    note = Notification.objects.create(**kw)
    NotificationVersion.objects.create(  # as notifications_send_many keeps one per version
        notification=note,
        revision=len(note.revisions),
        rig=note.rig,
        merge_request=note.source_merge_request,
        kind=note.kind,
        severity=note.severity,
        summary=note.summary,
        action=note.action,
        source_commits=note.source_commits,
        cascade=note.cascade,
        depth=note.depth,
    )
    return note


def event(**kw) -> Event:
    """An event row as a service would append it (objects given for rig/convoy/repository)."""
    kw.setdefault("kind", "test")
    for name in ("rig", "convoy", "repository"):
        if name in kw:
            kw[f"{name}_id"] = kw.pop(name).pk
    return Event.objects.create(**kw)
