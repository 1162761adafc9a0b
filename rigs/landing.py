"""Reading a landed change: what a merge that just landed on a target changed, read from git
once for everyone it concerns, and handed back as plain data.

Three reads, each one pass over git, none of them a decision:

- :func:`landed_change_read`: the files (``+``/``-`` lines, status), the symbols the hunks
  touch, and how many commits landed;
- :func:`landed_change_forecasts`: for each rig, the files its tip would conflict in against
  the new tip (``merge-tree``, skipped when the rig cannot conflict) and how far behind it is;
- :func:`landed_change_excerpts`: the start of the patch for sets of paths (each set once).

Who is told what (the policy) is in the ``cascades`` app; it never runs git itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from rigs import git
from rigs.models import Repository, Rig

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
