"""Cascades: when one rig's change affects others, tell each affected rig exactly what changed
and what to do about it.

Triggers:
1. A merge lands (`merge_landed`): per other live rig on that target, a conflict forecast or
   "base moved", "interface changed" for watched paths, "dependencies changed" for manifests;
   plus follow-up beads where the conceptual merge belongs (docs, tests, deployment).
2. A rig's branch moves (`branch_updated`): the overlap radar warns both rigs before any merge
   conflict exists.
3. A merge conflicts or its gate fails: the owning rig is told, with files or the log tail.

Git work (trigger 1) runs in a Celery task after the landing commits; triggers 2 and 3 use what
is already stored and run inside the transaction that caused them.
"""

import fnmatch
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q

from convoys.models import Bead, Leg, Notification
from convoys.notifications import notification_send, notifications_send_many
from convoys.selectors import merge_target_for_rig, rig_current_leg, rigs_current_legs
from rigs import git
from rigs.models import MergeRequest, Repository, Rig

logger = logging.getLogger(__name__)

K = Notification.Kind
SEV = Notification.Severity

MANIFEST_PATTERNS = [
    "requirements*.txt",
    "requirements/*.txt",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "Pipfile",
    "Pipfile.lock",
    "poetry.lock",
    "uv.lock",
    "package.json",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "go.mod",
    "go.sum",
    "Cargo.toml",
    "Cargo.lock",
    "Gemfile",
    "Gemfile.lock",
    "composer.json",
    "composer.lock",
    "pom.xml",
    "build.gradle",
]
DEPLOY_PATTERNS = [
    "Dockerfile",
    "*.Dockerfile",
    "docker-compose*.yml",
    "docker-compose*.yaml",
    ".github/**",
    ".gitlab-ci.yml",
    ".ci/**",
    "deploy/**",
    "infra/**",
    "k8s/**",
    "helm/**",
    "*.tf",
    "Procfile",
    "Makefile",
]
DOC_PATTERNS = ["docs/**", "doc/**", "*.md", "*.rst"]
TEST_PATTERNS = [
    "tests/**",
    "test/**",
    "**/tests/**",
    "test_*.py",
    "**/test_*.py",
    "*_test.py",
    "**/*_test.py",
    "**/*.test.js",
    "**/*.spec.ts",
    "*_test.go",
    "**/*_test.go",
]
CODE_SUFFIXES = (
    ".py",
    ".js",
    ".ts",
    ".tsx",
    ".jsx",
    ".go",
    ".rs",
    ".java",
    ".rb",
    ".php",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".kt",
    ".swift",
    ".cs",
)
EXCERPT_LINES = 40
# Notifications that ask a rig to change its code; its next landing answers them.
ANSWERABLE_KINDS = [K.INTERFACE_CHANGED, K.DEPENDENCIES_CHANGED, K.ASSIGNED]


def path_matches(path: str, patterns: list[str]) -> bool:
    """Glob match where `**` spans directories and a bare name matches at any depth."""
    for pattern in patterns:
        if fnmatch.fnmatchcase(path, pattern):
            return True
        if pattern.endswith("/**") and (path + "/").startswith(pattern[:-2]):
            return True
        if "/" not in pattern and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern):
            return True
        if pattern.startswith("**/") and path_matches(path, [pattern[3:]]):
            return True
    return False


def rig_watch_patterns(rig: Rig, leg: Leg | None) -> list[str]:
    """What a rig watches: its own watch globs plus the scope of every leg its leg depends on."""
    patterns = list(rig.watch)
    if leg is not None:
        for dependency in leg.depends_on.all():
            patterns.extend(dependency.scope)
    return patterns


def rig_owns(rig: Rig, leg: Leg | None, role: str, patterns: list[str]) -> bool:
    """Whether a rig owns an area: its declared role, else its scope covers the area."""
    if rig.role:
        return rig.role == role
    scope = list(rig.scope) + (list(leg.scope) if leg is not None else [])
    return any(path_matches(glob.rstrip("*").rstrip("/") or glob, patterns) for glob in scope)


def _cascade_of(rigs: list[Rig]) -> tuple[uuid.UUID, int]:
    """A change made in answer to a notification continues that cascade one level deeper."""
    answered = (
        Notification.objects.filter(rig__in=rigs, kind__in=ANSWERABLE_KINDS)
        .order_by("-created_at", "-id")
        .first()
    )
    if answered is not None and _since_last_landing(answered):
        return answered.cascade, answered.depth + 1
    return uuid.uuid4(), 0


def _since_last_landing(notification: Notification) -> bool:
    """The notification arrived while the rig worked on the change that just landed (after its
    previous landing, if any)."""
    previous = (
        MergeRequest.objects.filter(rig_id=notification.rig_id, state=MergeRequest.State.MERGED)
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)[1:2]
    )
    last = next(iter(previous), None)
    return last is None or notification.created_at > last


# --- trigger 1: a merge landed ---------------------------------------------------------------


@dataclass
class LandedChange:
    repository: Repository
    target_branch: str
    old_tip: str
    new_tip: str
    merge_requests: list[MergeRequest]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    symbols: dict[str, list[str]] = field(default_factory=dict)
    commits: int = 0
    since: dict[str, tuple[set[str], int] | None] = field(default_factory=dict)
    excerpts: dict[tuple[str, ...], str] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        return sorted(self.files)

    @property
    def source_rigs(self) -> list[Rig]:
        return [mr.rig for mr in self.merge_requests if mr.rig is not None]

    @property
    def range(self) -> str:
        return f"{self.old_tip[:12]}..{self.new_tip[:12]}"

    def describe(self) -> str:
        names = ", ".join(sorted({r.slug for r in self.source_rigs})) or "a branch"
        return f"{names} landed on {self.target_branch}"


def landed_change_read(
    repository: Repository,
    target_branch: str,
    old_tip: str,
    new_tip: str,
    merge_requests: list[MergeRequest],
) -> LandedChange:
    """Everything about the landed diff, read from git once for all rigs."""
    repo = repository.path
    change = LandedChange(repository, target_branch, old_tip, new_tip, merge_requests)
    for f in git.diff_numstat(repo, old_tip, new_tip):
        change.files[f.path] = {
            "path": f.path,
            "added": f.added,
            "deleted": f.deleted,
            "status": f.status,
        }
    change.symbols = git.diff_symbols(repo, old_tip, new_tip)
    change.commits = git.rev_count(repo, old_tip, new_tip)
    return change


def _live_rigs_with_legs(change: LandedChange) -> list[tuple[Rig, Leg | None]]:
    """Every other live rig on the repository with its current leg (two queries in all)."""
    source_ids = {r.id for r in change.source_rigs}
    rigs = list(
        Rig.objects.filter(repository=change.repository, state__in=Rig.LIVE_STATES)
        .exclude(id__in=source_ids)
        .select_related("repository")
        .order_by("id")
    )
    legs = rigs_current_legs(r.id for r in rigs)
    return [(rig, legs.get(rig.id)) for rig in rigs]


def _since(change: LandedChange, base: str) -> tuple[set[str], int] | None:
    """Paths changed and commits made on the target from `base` to the new tip, once per base
    per cascade; None when `base` is not an ancestor of the new tip."""
    if base not in change.since:
        repo = change.repository.path
        if base == change.old_tip:
            change.since[base] = (set(change.files), change.commits)
        elif git.rev_parse(repo, base) and git.is_ancestor(repo, base, change.new_tip):
            paths = set(git.changed_paths(repo, base, change.new_tip))
            change.since[base] = (paths, git.rev_count(repo, base, change.new_tip))
        else:
            change.since[base] = None
    return change.since[base]


def _forecast(change: LandedChange, rig: Rig) -> tuple[list[str], int]:
    """(conflicting files, commits behind) of the rig's tip against the new target tip.

    A rig whose last sync found it on top of the target it saw (behind 0) can only conflict on a
    path both sides edited since then; when its edits and the paths the target changed since
    are disjoint, `merge-tree` is skipped and its distance is the commit count since. Otherwise
    git answers."""
    repo = change.repository.path
    head = rig.head_commit or git.resolve_branch(repo, rig.branch)
    if not head:
        return [], 0
    if rig.target_commit and rig.behind == 0:
        since = _since(change, rig.target_commit)
        if since is not None:
            paths, commits = since
            rig_paths = {f.get("path") for f in rig.changed_files or [] if isinstance(f, dict)}
            if not rig_paths & paths:
                return [], commits
    behind = git.ahead_behind(repo, head, change.new_tip)[1]
    merged = git.merge_tree(repo, change.new_tip, head)
    return ([] if merged.clean else merged.conflicts), behind


def _auto_rebase(rig: Rig, change: LandedChange) -> bool:
    """Keep an idle, clean rig current for its agent (when the repository allows it)."""
    if not change.repository.auto_rebase or rig.state not in (Rig.State.READY, Rig.State.MERGED):
        return False
    worktree = rig.worktree_path
    if rig.dirty or not worktree or git.is_dirty(worktree):
        return False
    return git.rebase_worktree(worktree, change.new_tip)


def _excerpt(change: LandedChange, paths: list[str]) -> str:
    key = tuple(paths)
    if key not in change.excerpts:  # twenty watchers of the same file share one diff
        change.excerpts[key] = git.diff_excerpt(
            change.repository.path,
            change.old_tip,
            change.new_tip,
            paths,
            max_lines=EXCERPT_LINES,
        )
    return change.excerpts[key]


@dataclass
class RigImpact:
    """What one landing means for one rig (read from git before any write)."""

    rig: Rig
    leg: Leg | None
    conflicts: list[str]
    behind: int
    watched: list[str]
    rebased: bool
    excerpt: str


def _impact_notices(
    change: LandedChange, impact: RigImpact, manifests: list[str]
) -> list[dict[str, Any]]:
    """The notifications (as `notification_send` arguments) one rig gets for one landing."""
    rig, new_tip, target = impact.rig, change.new_tip, change.target_branch
    what = change.describe()
    notices = []
    if impact.conflicts:
        files = ", ".join(impact.conflicts[:5])
        notices.append(
            {
                "kind": K.REBASE_NEEDED,
                "severity": SEV.WARNING,
                "summary": f"Rebase needed: {what}; it conflicts with your work in {files}",
                "action": f"Rebase {rig.branch} onto {target} ({new_tip[:12]}) now and resolve the "
                f"conflicts in {', '.join(impact.conflicts)}.",
                "changes": {
                    "conflicts": impact.conflicts,
                    "target_commit": new_tip,
                    "behind": impact.behind,
                    "range": change.range,
                },
            }
        )
    elif impact.rebased:
        notices.append(
            {
                "kind": K.BASE_MOVED,
                "severity": SEV.INFO,
                "summary": f"Your base moved ({what}); Gas Town rebased your idle rig onto "
                f"{new_tip[:12]}",
                "action": "Nothing to do: your worktree already has the new base.",
                "changes": {"behind": 0, "rebased_onto": new_tip, "range": change.range},
            }
        )
    else:
        notices.append(
            {
                "kind": K.BASE_MOVED,
                "severity": SEV.INFO,
                "summary": f"Your base moved: {what}; you are {impact.behind} commit(s) behind",
                "action": f"Rebase onto {target} ({new_tip[:12]}) when convenient.",
                "changes": {
                    "behind": impact.behind,
                    "target_commit": new_tip,
                    "range": change.range,
                },
            }
        )
    if impact.watched:
        symbols = sorted({s for p in impact.watched for s in change.symbols.get(p, [])})
        named = f" ({', '.join(symbols[:6])})" if symbols else ""
        notices.append(
            {
                "kind": K.INTERFACE_CHANGED,
                "severity": SEV.WARNING,
                "summary": f"Interface changed: {', '.join(impact.watched[:5])}{named}",
                "action": "Update your usage of the changed interface"
                + (f": {', '.join(symbols)}" if symbols else "")
                + ".",
                "changes": {
                    "files": [change.files[p] for p in impact.watched],
                    "symbols": {p: change.symbols.get(p, []) for p in impact.watched},
                    "excerpt": impact.excerpt,
                    "range": change.range,
                },
            }
        )
    if manifests:
        notices.append(
            {
                "kind": K.DEPENDENCIES_CHANGED,
                "severity": SEV.WARNING,
                "summary": f"Dependencies changed: {', '.join(manifests)}; reinstall",
                "action": "Rebase, then reinstall dependencies (for example the repository's setup "
                "command) before running tests.",
                "changes": {"files": [change.files[p] for p in manifests], "range": change.range},
            }
        )
    return notices


def cascade_merge_landed(
    *,
    repository_id: int,
    target_branch: str,
    old_tip: str,
    new_tip: str,
    merge_request_ids: list[int],
) -> list[Notification]:
    """Tell every other live rig on `target_branch` what this landing means for it."""
    repository = Repository.objects.get(pk=repository_id)
    merge_requests = list(
        MergeRequest.objects.filter(id__in=merge_request_ids).select_related("rig")
    )
    change = landed_change_read(repository, target_branch, old_tip, new_tip, merge_requests)
    if not change.files:
        return []
    cascade, depth = _cascade_of(change.source_rigs)
    primary = merge_requests[0] if merge_requests else None
    manifests = [p for p in change.paths if path_matches(p, MANIFEST_PATTERNS)]
    code_symbols = {
        p: s
        for p, s in change.symbols.items()
        if p.endswith(CODE_SUFFIXES) and not path_matches(p, TEST_PATTERNS)
    }
    # Git reads first (no transaction open), then all writes in one transaction.
    impacts = []
    rigs = _live_rigs_with_legs(change)
    for rig, leg in rigs:
        if merge_target_for_rig(rig, leg) != target_branch:
            continue
        conflicts, behind = _forecast(change, rig)
        watched = [p for p in change.paths if path_matches(p, rig_watch_patterns(rig, leg))]
        rebased = False if conflicts else _auto_rebase(rig, change)
        excerpt = _excerpt(change, watched) if watched else ""
        impacts.append(RigImpact(rig, leg, conflicts, behind, watched, rebased, excerpt))
    common = {
        "source_rig": primary.rig if primary else None,
        "source_merge_request": primary,
        "source_commits": f"{old_tip}..{new_tip}",
        "cascade": cascade,
        "depth": depth,
    }
    items = [
        {
            "rig": impact.rig,
            "convoy_id": impact.leg.convoy_id if impact.leg else None,
            **notice,
            **common,
        }
        for impact in impacts
        for notice in _impact_notices(change, impact, manifests)
    ]
    with transaction.atomic():
        sent = notifications_send_many(items)
        sent.extend(_follow_ups(change, code_symbols, common, rigs))
    return sent


def _follow_ups(
    change: LandedChange,
    code_symbols: dict[str, list[str]],
    common: dict[str, Any],
    candidates: list[tuple[Rig, Leg | None]],
) -> list[Notification]:
    """The conceptual merge: work the landed change creates elsewhere, as beads
    `discovered-from` the merge request, in the rig that owns the area."""
    from convoys.services import bead_create

    primary = common["source_merge_request"]
    if primary is None:
        return []
    # Only a rig with a role or a scope can own an area.
    candidates = [(r, leg) for r, leg in candidates if r.role or r.scope or (leg and leg.scope)]
    if not candidates:
        return []
    tests_changed = any(path_matches(p, TEST_PATTERNS) for p in change.paths)
    deploy_changed = [p for p in change.paths if path_matches(p, DEPLOY_PATTERNS)]
    names = sorted({s for symbols in code_symbols.values() for s in symbols})
    work = []
    if names:
        work.append(
            (
                "docs",
                DOC_PATTERNS,
                f"Update the docs for {', '.join(names[:8])}",
                "The public interface changed in " + ", ".join(sorted(code_symbols)),
            )
        )
    if code_symbols and not tests_changed:
        work.append(
            (
                "tests",
                TEST_PATTERNS,
                "Add tests for " + ", ".join(names[:8] or sorted(code_symbols)[:5]),
                "Code changed without a test change: " + ", ".join(sorted(code_symbols)),
            )
        )
    if deploy_changed:
        work.append(
            (
                "deploy",
                DEPLOY_PATTERNS,
                "Review deployment change in " + ", ".join(deploy_changed[:5]),
                f"{change.describe()} touched deployment files you own.",
            )
        )
    sent = []
    for role, patterns, title, description in work:
        owner = next(((r, leg) for r, leg in candidates if rig_owns(r, leg, role, patterns)), None)
        if owner is None:
            continue
        rig, leg = owner
        exists = Bead.objects.filter(
            rig=rig, discovered_from_merge_request=primary, title=title
        ).exists()
        if exists:
            continue
        bead = bead_create(
            rig=rig,
            leg=leg,
            title=title,
            description=f"{description}\n\nLanded in {change.range} ({change.describe()}).",
            priority=1,
            type="task",
            labels=["follow-up", role],
            discovered_from_merge_request=primary,
        )
        note = notification_send(
            rig=rig,
            kind=K.ASSIGNED,
            severity=SEV.WARNING,
            summary=f"Follow-up work for you: {title}",
            action=f"Claim {bead.short_id} (gt claim {bead.short_id}) when you can.",
            changes={"bead": bead.short_id, "range": change.range},
            convoy_id=leg.convoy_id if leg else None,
            **common,
        )
        if note is not None:
            sent.append(note)
    return sent


# --- trigger 2: a rig's branch moved: the overlap radar --------------------------------------


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


# --- trigger 3: a merge conflicted or its gate failed ----------------------------------------


def cascade_merge_refused(*, merge_request: MergeRequest) -> Notification | None:
    """Tell the owning rig why its merge did not land, and queue the fix as a bead."""
    from convoys.services import bead_create

    rig = merge_request.rig
    if rig is None:
        return None
    leg = rig_current_leg(rig)
    convoy_id = leg.convoy_id if leg else None
    target = merge_request.target_commit
    if merge_request.state == MergeRequest.State.CONFLICTED:
        files = list(merge_request.conflicts)
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        bead = bead_create(
            rig=rig,
            leg=leg,
            title=f"Resolve merge conflicts in {shown}",
            description=f"Merge request {merge_request.id} conflicts with "
            f"{merge_request.target_branch} at {target}. Rebase onto it, resolve "
            + ", ".join(files)
            + ", then ask to merge again (gt done).",
            priority=0,
            type="bug",
            labels=["merge-conflict"],
            discovered_from_merge_request=merge_request,
        )
        return notification_send(
            rig=rig,
            kind=K.MERGE_CONFLICTED,
            severity=SEV.CRITICAL,
            summary=f"Your merge conflicts with {merge_request.target_branch} in {shown}",
            action=f"Rebase {rig.branch} onto {target[:12]}, resolve the conflicts, then gt done "
            f"(tracked as {bead.short_id}).",
            changes={"conflicts": files, "target_commit": target, "bead": bead.short_id},
            source_merge_request=merge_request,
            convoy_id=convoy_id,
        )
    if merge_request.state == MergeRequest.State.FAILED:
        tail = merge_request.gate_log_tail
        return notification_send(
            rig=rig,
            kind=K.GATE_FAILED,
            severity=SEV.CRITICAL,
            summary=f"Gate failed for merge request {merge_request.id}: {merge_request.reason}",
            action="Read the log tail, fix the failure on your branch, then gt done again.",
            changes={
                "exit_code": merge_request.gate_exit_code,
                "log_tail": tail,
                "candidate": merge_request.merge_commit,
                "target_commit": target,
            },
            source_merge_request=merge_request,
            convoy_id=convoy_id,
        )
    return None


def rigs_watching(repository: Repository, paths: list[str]) -> list[Rig]:
    """Live rigs whose watch patterns match any of `paths` (for dashboards and tests)."""
    result = []
    for rig in Rig.objects.filter(repository=repository, state__in=Rig.LIVE_STATES).filter(
        ~Q(watch=[])
    ):
        if any(path_matches(p, rig.watch) for p in paths):
            result.append(rig)
    return result
