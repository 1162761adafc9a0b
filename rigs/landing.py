"""Reading a landed change: what a merge that just landed on a target changed, read from git
once for everyone it concerns, and handed back as plain data.

Three reads, each one pass over git, none of them a decision:

- :func:`landed_change_read`: the files (``+``/``-`` lines, status), the symbols the hunks
  touch, and how many commits landed;
- :func:`landed_change_forecasts`: for each rig, the files its tip would conflict in against
  the new tip (``merge-tree``, skipped when the rig cannot conflict) and how far behind it is;
- :func:`landed_change_excerpts`: the start of the patch for sets of paths (each set once).

And one read before anything lands, for the overlap radar: :func:`overlap_forecasts`, where
two live rigs' tips change the same files, line by line (``merge-tree`` of the two tips, then
the ``-U0`` hunks of each side against their merge base).

Who is told what (the policy) is in the ``cascades`` app; it never runs git itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from rigs import git
from rigs.models import Repository, Rig

logger = logging.getLogger("rigs.landing")

EXCERPT_LINES = 40
# Per base commit: (paths changed on the target since it, commits since it), or None when it is
# not an ancestor of the new tip.
_Since = dict[str, tuple[set[str], int] | None]


@dataclass(frozen=True)
class LandedChange:
    """A landed diff: ``old_tip..new_tip`` on ``target_branch`` of one repository."""

    repository_path: str
    target_branch: str
    old_tip: str
    new_tip: str
    files: dict[str, git.FileChange] = field(default_factory=dict)
    symbols: dict[str, list[str]] = field(default_factory=dict)
    commits: int = 0

    @property
    def paths(self) -> list[str]:
        return sorted(self.files)

    @property
    def range(self) -> str:
        return f"{self.old_tip[:12]}..{self.new_tip[:12]}"

    def file_stats(self, paths: Iterable[str]) -> list[dict]:
        """``{path, added, deleted, status}`` of each path (what a notification carries)."""
        stats = []
        for path in paths:
            f = self.files[path]
            stats.append(
                {"path": f.path, "added": f.added, "deleted": f.deleted, "status": f.status}
            )
        return stats


@dataclass(frozen=True)
class Forecast:
    """What the landing means for one rig's branch: conflicting files, commits behind."""

    conflicts: list[str]
    behind: int


def landed_change_read(
    *, repository: Repository, target_branch: str, old_tip: str, new_tip: str
) -> LandedChange:
    """Everything about the landed diff, read from git once (three commands)."""
    repo = repository.path
    return LandedChange(
        repository_path=repo,
        target_branch=target_branch,
        old_tip=old_tip,
        new_tip=new_tip,
        files={f.path: f for f in git.diff_numstat(repo, old_tip, new_tip)},
        symbols=git.diff_symbols(repo, old_tip, new_tip),
        commits=git.rev_count(repo, old_tip, new_tip),
    )


def landed_change_forecasts(change: LandedChange, rigs: Iterable[Rig]) -> dict[int, Forecast]:
    """A :class:`Forecast` per rig id.

    A rig whose last sync found it on top of the target it saw (behind 0) can only conflict on
    a path both sides edited since then; when its edits and the paths the target changed since
    are disjoint, ``merge-tree`` is skipped and its distance is the commit count since (read
    once per distinct base). Otherwise git answers."""
    since: dict[str, tuple[set[str], int] | None] = {
        change.old_tip: (set(change.files), change.commits)
    }
    return {rig.id: _forecast(change, rig, since) for rig in rigs}


def _forecast(change: LandedChange, rig: Rig, since: _Since) -> Forecast:
    repo = change.repository_path
    head = rig.head_commit or git.resolve_branch(repo, rig.branch)
    if not head:
        return Forecast([], 0)
    if rig.target_commit and rig.behind == 0:
        changed = _since(change, rig.target_commit, since)
        if changed is not None:
            paths, commits = changed
            rig_paths = {f.get("path") for f in rig.changed_files or [] if isinstance(f, dict)}
            if not rig_paths & paths:
                return Forecast([], commits)
    behind = git.ahead_behind(repo, head, change.new_tip)[1]
    merged = git.merge_tree(repo, change.new_tip, head)
    return Forecast([] if merged.clean else merged.conflicts, behind)


def _since(change: LandedChange, base: str, cache: _Since) -> tuple[set[str], int] | None:
    """Paths changed and commits made on the target from ``base`` to the new tip; None when
    ``base`` is not an ancestor of the new tip."""
    if base not in cache:
        repo = change.repository_path
        if git.rev_parse(repo, base) and git.is_ancestor(repo, base, change.new_tip):
            paths = set(git.changed_paths(repo, base, change.new_tip))
            cache[base] = (paths, git.rev_count(repo, base, change.new_tip))
        else:
            cache[base] = None
    return cache[base]


def landed_change_excerpts(
    change: LandedChange, path_sets: Iterable[Iterable[str]], *, max_lines: int = EXCERPT_LINES
) -> dict[tuple[str, ...], str]:
    """The start of the landed patch for each set of paths, keyed by the set as a tuple; twenty
    rigs watching the same file share one diff. Empty sets are skipped."""
    excerpts: dict[tuple[str, ...], str] = {}
    for paths in path_sets:
        key = tuple(paths)
        if key and key not in excerpts:
            excerpts[key] = git.diff_excerpt(
                change.repository_path, change.old_tip, change.new_tip, list(key), max_lines
            )
    return excerpts


# The overlap forecast: bounded per pair (the policy bounds the pairs).
OVERLAP_FILES_MAX = 20  # shared files compared line by line per pair; the rest are listed
OVERLAP_EXCERPT_LINES = 30  # per side and file
Lines = tuple[int, int]  # base lines, 1-based, inclusive


@dataclass(frozen=True)
class FileOverlap:
    """One file both tips change, in the line numbers of their merge base's version of it."""

    path: str
    conflict: bool  # ``merge-tree`` of the two tips stops here
    together: list[Lines]  # where the sides' hunks overlap or touch (git's rule for a conflict)
    mine: list[Lines]  # every place the rig changes it
    theirs: list[Lines]  # every place the other rig changes it
    mine_excerpt: str  # the rig's hunks in ``together`` (all its hunks for a conflict without)
    theirs_excerpt: str
    created: bool = False  # both sides create it


@dataclass(frozen=True)
class OverlapForecast:
    """What merging one rig's tip with another's would do, before either lands."""

    other_id: int
    base: str  # their merge base
    conflicts: list[str]  # every file ``merge-tree`` reports, compared or not
    files: list[FileOverlap]  # the files both tips change, compared line by line
    not_compared: list[str]  # shared files over the per-pair limit


def overlap_forecasts(
    *, rig: Rig, partners: Iterable[tuple[Rig, list[str]]], max_files: int = OVERLAP_FILES_MAX
) -> dict[int, OverlapForecast]:
    """For each ``(other rig, paths both are known to change)``: an :class:`OverlapForecast` of
    ``rig``'s branch tip against the other's (their tips now, not the heads of their last
    syncs), keyed by the other rig's id. A pair git cannot answer (a branch gone, unrelated
    histories, a failing command) is left out: unknown, not "no overlap".

    Per pair: ``merge-base`` and ``merge-tree --write-tree`` of the two tips, then ``diff -U0``
    of the other's tip against the base for at most ``max_files`` of the paths (conflicting
    ones first); ``rig``'s side is diffed once per distinct base, for all its pairs at once."""
    repo = rig.repository.path
    try:
        tip = git.resolve_branch(repo, rig.branch)
    except git.GitError:
        logger.warning("overlap: cannot read the branch of rig %s", rig.slug, exc_info=True)
        return {}
    if tip is None:
        return {}
    planned: list[tuple[Rig, str, str, list[str], list[str], list[str]]] = []
    forecasts: dict[int, OverlapForecast] = {}
    for other, paths in partners:
        try:
            theirs = git.resolve_branch(repo, other.branch)
            base = git.merge_base(repo, tip, theirs) if theirs else None
            if theirs is None or base is None:
                continue
            if base in (tip, theirs):  # one side has nothing the other lacks
                forecasts[other.id] = OverlapForecast(other.id, base, [], [], [])
                continue
            merged = git.merge_tree(repo, tip, theirs)
        except git.GitError:
            logger.warning("overlap: %s and %s not compared", rig.slug, other.slug, exc_info=True)
            continue
        shared = sorted(set(paths), key=lambda p: (p not in merged.conflicts, p))
        planned.append(
            (other, base, theirs, shared[:max_files], shared[max_files:], merged.conflicts)
        )
    by_base: dict[str, set[str]] = {}
    for _, base, _, compared, _, _ in planned:
        by_base.setdefault(base, set()).update(compared)
    mine: dict[str, dict[str, git.FileHunks]] = {}
    for base, paths in by_base.items():
        try:
            mine[base] = git.diff_hunks(repo, base, tip, sorted(paths))
        except git.GitError:
            logger.warning("overlap: cannot diff rig %s", rig.slug, exc_info=True)
    for other, base, theirs, compared, rest, conflicts in planned:
        if base not in mine:
            continue
        try:
            their_hunks = git.diff_hunks(repo, base, theirs, compared)
        except git.GitError:
            logger.warning("overlap: cannot diff rig %s", other.slug, exc_info=True)
            continue
        files = [
            _file_overlap(path, mine[base][path], their_hunks[path], path in conflicts)
            for path in compared
            if path in mine[base] and path in their_hunks
        ]
        forecasts[other.id] = OverlapForecast(other.id, base, conflicts, files, rest)
    return forecasts


def _lines(start: int, end: int) -> Lines:
    """A half-open, 0-based span of base lines as 1-based inclusive lines; an insertion between
    lines n and n + 1 reads "n to n+1" (at the top: line 1)."""
    if end > start:
        return start + 1, end
    return (start, start + 1) if start else (1, 1)


def _file_overlap(
    path: str, mine: git.FileHunks, theirs: git.FileHunks, conflict: bool
) -> FileOverlap:
    """Where two sides' hunks of one file meet. Spans that overlap or touch form a cluster (git
    conflicts on touching changes too); a cluster with hunks of both sides is "together"."""
    spans = sorted(
        [(*h.span, 0, h) for h in mine.hunks] + [(*h.span, 1, h) for h in theirs.hunks],
        key=lambda item: (item[0], item[1], item[2]),
    )
    together: list[Lines] = []
    picked: tuple[list[git.Hunk], list[git.Hunk]] = ([], [])
    cluster: list[tuple[int, int, int, git.Hunk]] = []

    def close() -> None:
        if cluster and {side for _, _, side, _ in cluster} == {0, 1}:
            together.append(_lines(cluster[0][0], max(end for _, end, _, _ in cluster)))
            for _, _, side, hunk in cluster:
                picked[side].append(hunk)

    for item in spans:
        if cluster and item[0] > max(end for _, end, _, _ in cluster):
            close()
            cluster = []
        cluster.append(item)
    close()
    if conflict and not together:  # a conflict git sees and the hunks do not show: all of it
        picked = (list(mine.hunks), list(theirs.hunks))
    return FileOverlap(
        path=path,
        conflict=conflict,
        together=together,
        mine=[_lines(*h.span) for h in mine.hunks],
        theirs=[_lines(*h.span) for h in theirs.hunks],
        mine_excerpt=_hunks_excerpt(picked[0], mine.binary),
        theirs_excerpt=_hunks_excerpt(picked[1], theirs.binary),
        created=mine.created and theirs.created,
    )


def _hunks_excerpt(hunks: list[git.Hunk], binary: bool) -> str:
    if binary:
        return "(binary file)"
    lines = [line for hunk in hunks for line in hunk.text.splitlines()]
    if len(lines) > OVERLAP_EXCERPT_LINES:
        more = len(lines) - OVERLAP_EXCERPT_LINES
        lines = [*lines[:OVERLAP_EXCERPT_LINES], f"... ({more} more lines)"]
    return "\n".join(lines)
