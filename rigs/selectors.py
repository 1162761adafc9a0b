"""Reads for rigs that are not a model's fields: where a rig's branch is now.

`rig_positions` reads head, ahead and behind from git when it is asked (a sanctioned exception
to DESIGN rule 4, asked for by issue 16: a few milliseconds of read-only git per page), and
falls back to what the last sync recorded when git cannot be read. Dirty is not read here: it
stays the recorded value (reading it means a `git status` per worktree), labelled with its age.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from rigs import git
from rigs.models import Repository, Rig

# Each git read a page makes is bounded by this (seconds); past it, the recorded values show.
POSITION_READ_TIMEOUT = 2.0
# The counts between two commits never change: kept for a day, keyed by both commit ids.
COUNTS_CACHE_SECONDS = 24 * 3600
# Rigs whose branch exists on disk (provisioned, not torn down).
READABLE_STATES = Rig.LIVE_STATES


@dataclass(frozen=True)
class RigPosition:
    """Where a rig's branch is against its repository's target branch. `fresh`: read from git
    at `read_at` (just now); else the values the last sync recorded at `read_at` (None: it
    was never synced)."""

    head: str
    ahead: int
    behind: int
    read_at: datetime | None
    fresh: bool

    @property
    def as_of(self) -> str:
        """How old the counts are, in words: 'read from git just now', 'as of the last sync at
        12:34 UTC', or 'never synced' (never "as of the last sync" when there was none)."""
        if self.fresh:
            return "read from git just now"
        if self.read_at is None:
            return "never synced"
        return f"as of the last sync at {self.read_at:%H:%M} UTC"


def _recorded(rig: Rig) -> RigPosition:
    return RigPosition(rig.head_commit, rig.ahead, rig.behind, rig.last_synced_at, False)


def _counts_key(head: str, target: str) -> str:
    return f"gastown:ahead-behind:{head}:{target}"


def _repository_positions(repository: Repository, rigs: list[Rig]) -> dict[int, RigPosition]:
    """One `for-each-ref` for the heads and the target's tip, then one `rev-list --count` per
    distinct (head, target tip) pair not yet in the cache."""
    now = timezone.now()
    readable = [rig for rig in rigs if rig.state in READABLE_STATES and rig.branch]
    positions = {rig.id: _recorded(rig) for rig in rigs}
    if not readable:
        return positions
    target = repository.target_branch
    # A sanctioned exception to DESIGN rule 4 (issue 16): read-only git at read time, bounded.
    try:
        tips = git.branch_tips(
            repository.path, [target, *(r.branch for r in readable)], timeout=POSITION_READ_TIMEOUT
        )
    except git.GitError:
        return positions  # not readable from here (moved, another host): the recorded values
    target_tip = tips.get(target)
    if target_tip is None:
        return positions
    heads = {rig.id: tips[rig.branch] for rig in readable if rig.branch in tips}
    keys = {_counts_key(head, target_tip): head for head in set(heads.values())}
    counts: dict[str, tuple[int, int]] = {}
    for key, value in cache.get_many(list(keys)).items():
        counts[keys[key]] = tuple(value)
    learned = {}
    for key, head in keys.items():
        if head in counts:
            continue
        try:
            counts[head] = git.ahead_behind(
                repository.path, head, target_tip, timeout=POSITION_READ_TIMEOUT
            )
        except git.GitError:
            continue
        learned[key] = counts[head]
    if learned:
        cache.set_many(learned, COUNTS_CACHE_SECONDS)
    for rig_id, head in heads.items():
        if head in counts:
            ahead, behind = counts[head]
            positions[rig_id] = RigPosition(head, ahead, behind, now, True)
    return positions


def rig_positions(rigs: Iterable[Rig]) -> dict[int, RigPosition]:
    """Head, ahead and behind (against the repository's target branch) of each rig, by rig id,
    read from git now: one `for-each-ref` per repository, plus one `rev-list --count` per
    distinct (head, target tip) pair not seen before (cached: the counts of two commits never
    change). A rig whose branch cannot be read (not provisioned, torn down, its repository
    unreadable here) gets the values its last sync recorded, with `fresh` False. No query when
    the rigs' repositories are loaded (`select_related("repository")`), else one."""
    rigs = list(rigs)
    missing = {r.repository_id for r in rigs if not Rig.repository.is_cached(r)}
    loaded = Repository.objects.in_bulk(missing) if missing else {}
    by_repository: dict[int, list[Rig]] = defaultdict(list)
    repositories: dict[int, Repository] = {}
    for rig in rigs:
        repository = loaded.get(rig.repository_id) or rig.repository
        repositories[rig.repository_id] = repository
        by_repository[rig.repository_id].append(rig)
    positions: dict[int, RigPosition] = {}
    for repository_id, members in by_repository.items():
        positions.update(_repository_positions(repositories[repository_id], members))
    return positions


def rig_position(rig: Rig) -> RigPosition:
    """`rig_positions` of one rig."""
    return rig_positions([rig])[rig.id]


@dataclass(frozen=True)
class RigDirty:
    """Whether a rig's worktree has uncommitted changes: read from git now (`fresh`), else the
    value its last sync recorded at `read_at` (None: never synced)."""

    dirty: bool
    read_at: datetime | None
    fresh: bool

    @property
    def as_of(self) -> str:
        return RigPosition("", 0, 0, self.read_at, self.fresh).as_of


def rig_dirty(rig: Rig) -> RigDirty:
    """`git status` of the rig's worktree now, bounded (`git.worktree_dirty`); when it cannot
    be read (no worktree here, too slow), the recorded value. Call it outside a transaction."""
    # A sanctioned exception to DESIGN rule 4 (issue 16): one bounded, read-only `git status`.
    dirty = git.worktree_dirty(rig.worktree_path) if rig.worktree_path else None
    if dirty is None:
        return RigDirty(rig.dirty, rig.last_synced_at, False)
    return RigDirty(dirty, timezone.now(), True)


def rigs_provision_stranded(
    *, now: datetime | None = None, seconds: float | None = None
) -> list[int]:
    """Rigs asked for (or being provisioned) whose row has not moved for `seconds`: their task
    was lost (a broker that restarted before it was stored, a worker killed with the message
    unacknowledged, which Redis hands out again only after its visibility timeout). Provisioning
    them again is safe: a worker still at it holds the rig's lock and the new task skips."""
    now = now or timezone.now()
    if seconds is None:
        seconds = settings.GASTOWN_PROVISION_STALE_SECONDS
    limit = now - timedelta(seconds=seconds)
    return list(
        Rig.objects.filter(
            state__in=(Rig.State.REQUESTED, Rig.State.PROVISIONING), updated_at__lt=limit
        ).values_list("id", flat=True)
    )
