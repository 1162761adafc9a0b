"""The git-side halves of the rig lifecycle, run by Celery tasks (never inside a request).

Each function is idempotent: a worker killed half-way leaves state that the next run (the
task is redelivered thanks to `acks_late`) repairs instead of tripping over.
"""

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.process import private_dir, secrets_scrub
from common.statemachine import StaleState
from rigs import commands, git, paths, services
from rigs.models import Repository, Rig

logger = logging.getLogger(__name__)

SETUP_TIMEOUT_SECONDS = 1800
TAIL_LINES = 30


def repository_init_run(repository_id: int) -> None:
    """Make the bare repository a registration asked for, with a first empty commit on the
    target branch so rigs can branch from it. Safe to run twice."""
    repository = Repository.objects.get(pk=repository_id)
    path = Path(repository.path)
    if git.is_repository(path):
        return
    git.init_repository(path, initial_branch=repository.target_branch, bare=True)
    tree = git.run(path, "hash-object", "-t", "tree", "-w", "--stdin", stdin=b"")
    commit = git.commit_tree(path, tree, [], "Initial commit (made by Gas Town)")
    git.update_ref(path, f"refs/heads/{repository.target_branch}", commit, git.ZERO_OID)


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _copy_configured_files(repository: Repository, worktree: Path) -> list[Path]:
    """Copy or link ignored files such as `.env` from the main checkout into the worktree.

    Globs are matched in the repository's checkout; nothing may resolve outside it (no
    symlink escapes) or land outside the worktree. Returns what was linked (the setup
    command's sandbox may read it)."""
    source_root = Path(repository.path).resolve()
    linked: list[Path] = []
    if not (source_root / ".git").exists():
        return linked  # a bare repository has no files of its own to copy
    for pattern, link in [(p, False) for p in repository.copy_files] + [
        (p, True) for p in repository.link_files
    ]:
        for source in sorted(source_root.glob(pattern)):
            resolved = source.resolve()
            if (
                not resolved.is_relative_to(source_root)
                or ".git" in source.relative_to(source_root).parts
            ):
                logger.warning("skipping %s: outside the repository", source)
                continue
            target = worktree / source.relative_to(source_root)
            if not target.resolve().is_relative_to(worktree.resolve()):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
            if link:
                target.symlink_to(resolved)
                linked.append(resolved)
            elif resolved.is_dir():
                shutil.copytree(resolved, target, symlinks=True)
            else:
                shutil.copy2(resolved, target)
    return linked


class SetupFailed(Exception):
    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


def run_setup_command(
    command: str, worktree: Path, rig: Rig, *, linked: Iterable[Path] = ()
) -> str:
    """Run the repository's setup command in the new worktree.

    The command is admin configuration (like a Makefile target), so it runs through /bin/sh;
    nothing an agent sends ever reaches it. It runs on the rig's branch, though, so it is
    sandboxed with an allow-listed environment (rigs.commands): it sees its worktree and the
    files linked into it (`linked`, read-only), not the data dir or other rigs. Its process
    group is killed on timeout; its output comes back scrubbed of the server's secrets."""
    result = commands.checkout_command_run(
        command,
        checkout=worktree,
        variables={
            "GASTOWN_RIG": rig.slug,
            "GASTOWN_BRANCH": rig.branch,
            "GASTOWN_WORKTREE": str(worktree),
        },
        timeout=SETUP_TIMEOUT_SECONDS,
        readable=linked,
    )
    if result.timed_out:
        raise SetupFailed(f"setup command timed out after {SETUP_TIMEOUT_SECONDS}s", result.output)
    if result.exit_code != 0:
        raise SetupFailed(f"setup command exited with {result.exit_code}", result.output)
    return result.output


def _private_parents(worktree: Path) -> Path:
    """The worktree root and the repository's folder in it, private (0700); returns the latter.
    (The worktree itself is made by git; nothing outside the server's user may enter above it.)"""
    private_dir(Path(settings.GASTOWN_WORKTREE_ROOT))
    return private_dir(worktree.parent)


@contextmanager
def rig_exclusive(rig: Rig) -> Iterator[bool]:
    """Yield True if this process may work on the rig now: a non-blocking flock per rig, so a
    duplicate delivery skips while the first runs, and a crashed holder releases it at once."""
    lock_dir = private_dir(_private_parents(Path(rig.worktree_path)) / ".locks")
    fd = os.open(lock_dir / f"{rig.slug}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def rig_provision_run(rig_id: int) -> None:
    """requested → provisioning → ready (or failed, with the last lines of output)."""
    rig = Rig.objects.select_related("repository").get(pk=rig_id)
    with rig_exclusive(rig) as mine:
        if mine:
            _rig_provision(Rig.objects.select_related("repository").get(pk=rig_id))


def _rig_provision(rig: Rig) -> None:
    if rig.state == Rig.State.REQUESTED:
        try:
            services.rig_transition(
                rig=rig,
                to=Rig.State.PROVISIONING,
                reason="provisioning",
                provision_attempts=rig.provision_attempts + 1,
                progress=10,
                progress_label="checking out",
            )
        except StaleState:
            return  # another worker took it
    elif rig.state != Rig.State.PROVISIONING:
        return  # already provisioned, failed or archived: nothing to do
    repository = rig.repository
    started = time.monotonic()
    try:
        if repository.init_if_missing and not paths.looks_like_repository(Path(repository.path)):
            repository_init_run(repository.id)
        base_rev = rig.base_ref or repository.target_branch
        base_commit = git.rev_parse(repository.path, base_rev)
        if base_commit is None:
            raise git.GitError(f"base '{base_rev}' does not exist in {repository.name}")
        sparse_paths = (rig.scope + rig.watch) if rig.sparse else None
        worktree = Path(rig.worktree_path)
        _private_parents(worktree)
        created = git.worktree_add(
            repository.path,
            worktree,
            rig.branch,
            create_from=base_commit,
            sparse_paths=sparse_paths,
        )
        linked: list[Path] = []
        if repository.copy_files or repository.link_files:
            services.rig_progress_set(rig=rig, progress=60, label="copying files")
            linked = _copy_configured_files(repository, worktree)
        if repository.setup_command:
            services.rig_progress_set(rig=rig, progress=70, label="running setup")
            run_setup_command(repository.setup_command, worktree, rig, linked=linked)
        # A branch made just now sits on the base; one that was there (a retry after a crash)
        # may have moved, and its base is where it left the target.
        head = base_commit
        if not created and (tip := git.resolve_branch(repository.path, rig.branch)) is not None:
            base_commit = git.merge_base(repository.path, tip, base_commit) or base_commit
            head = tip
        with transaction.atomic():
            services.rig_transition(
                rig=rig,
                to=Rig.State.READY,
                reason="provisioned",
                base_commit=base_commit,
                head_commit=head,
                target_commit=base_commit,
                progress=100,
                progress_label="ready",
                failure_reason="",
                provisioned_at=timezone.now(),
                provision_seconds=time.monotonic() - started,
            )
    except (git.GitError, SetupFailed, OSError) as exc:
        output = (
            exc.tail(TAIL_LINES) if isinstance(exc, git.GitError) else getattr(exc, "output", "")
        )
        reason = secrets_scrub(f"{exc}\n{_tail(output)}".strip())
        logger.warning("provisioning rig %s failed: %s", rig.slug, exc)
        rig.refresh_from_db()
        if rig.state == Rig.State.PROVISIONING:
            services.rig_transition(
                rig=rig,
                to=Rig.State.FAILED,
                reason=str(exc)[:200],
                failure_reason=reason,
                progress_label="failed",
            )


def rig_sync_run(rig_id: int) -> Rig | None:
    """Read the rig's branch from disk (tip, ahead/behind, changed files, dirty) and store it."""
    rig = Rig.objects.select_related("repository").get(pk=rig_id)
    if rig.state not in Rig.LIVE_STATES:
        return None
    repo = rig.repository.path
    head = git.resolve_branch(repo, rig.branch)
    target = git.resolve_branch(repo, rig.repository.target_branch)
    if head is None or target is None:
        logger.warning("rig %s: branch or target missing; reconcile will report it", rig.slug)
        return None
    ahead, behind = git.ahead_behind(repo, head, target)
    base = git.merge_base(repo, head, target) or target
    changes = [
        {"path": c.path, "added": c.added, "deleted": c.deleted, "status": c.status}
        for c in git.diff_numstat(repo, base, head)
    ]
    worktree = Path(rig.worktree_path)
    dirty = worktree.is_dir() and git.is_dirty(worktree)
    return services.rig_sync_record(
        rig=rig,
        head_commit=head,
        target_commit=target,
        ahead=ahead,
        behind=behind,
        dirty=dirty,
        changed_files=changes,
    )


def rig_teardown_run(rig_id: int, force: bool = False, requested_by: str = "") -> str:
    """Remove the rig's worktree and branch, never losing work.

    Unforced: refused (and recorded) while the branch has commits not on the target or the
    worktree is dirty. Forced: the branch tip, plus uncommitted work as a commit on top, is
    saved under refs/gastown/archive/<slug>/<timestamp> first. Returns what happened."""
    rig = Rig.objects.select_related("repository").get(pk=rig_id)
    with rig_exclusive(rig) as mine:
        if not mine:
            return "busy: another worker is on this rig"
        return _rig_teardown(
            Rig.objects.select_related("repository").get(pk=rig_id), force, requested_by
        )


def _rig_teardown(rig: Rig, force: bool, requested_by: str) -> str:
    if rig.state == Rig.State.ARCHIVED:
        return "already archived"
    repository = rig.repository
    repo = repository.path
    worktree = Path(rig.worktree_path)
    tip = git.resolve_branch(repo, rig.branch)
    target = git.resolve_branch(repo, repository.target_branch)
    unmerged = len(git.commits_between(repo, target, tip)) if tip and target else 0
    dirty = git.status_porcelain(worktree) if worktree.is_dir() else []
    if (unmerged or dirty) and not force:
        message = services.lost_work_message(rig, unmerged, [line[3:] for line in dirty])
        services.rig_teardown_refused_record(rig=rig, message=message)
        return message
    archive_ref = ""
    if tip is not None and (unmerged or dirty):
        saved = git.snapshot_worktree(worktree) if dirty else None
        stamp = timezone.now().strftime("%Y%m%dT%H%M%S%fZ")
        archive_ref = f"refs/gastown/archive/{rig.slug}/{stamp}"
        git.update_ref(repo, archive_ref, saved or tip, git.ZERO_OID)
    git.worktree_remove(repo, worktree, force=True)
    if tip is not None:
        git.delete_branch(repo, rig.branch, force=True)
    reason = "torn down (forced)" if force else "torn down"
    if requested_by:
        reason += f" by {requested_by}"
    services.rig_archive_record(rig=rig, archive_ref=archive_ref, reason=reason)
    return f"archived{f' (saved at {archive_ref})' if archive_ref else ''}"


@dataclass
class Drift:
    kind: str
    repository: str
    detail: str
    repaired: bool = False


@dataclass
class ReconcileReport:
    drifts: list[Drift] = field(default_factory=list)

    def add(self, kind: str, repository: Repository, detail: str, repaired: bool = False) -> None:
        self.drifts.append(Drift(kind, repository.name, detail, repaired))


def reconcile_run(*, repository_id: int | None = None, repair: bool = False) -> ReconcileReport:
    """Compare database and disk; report (and with `repair`, fix) drift. Never prunes a
    worktree or branch that holds unmerged or uncommitted work."""
    report = ReconcileReport()
    repositories = Repository.objects.all()
    if repository_id is not None:
        repositories = repositories.filter(pk=repository_id)
    worktree_root = Path(paths.worktree_path_for("x", "x")).parent.parent
    for repository in repositories:
        repo = repository.path
        if not git.is_repository(repo):
            report.add("repository_missing", repository, f"{repo} is not a git repository")
            continue
        for leftover in git.cleanup_temporary_worktrees(repo) if repair else []:
            report.add("temporary_worktree", repository, f"removed {leftover}", repaired=True)
        rigs = {Path(r.worktree_path).resolve(): r for r in repository.rigs.all()}
        live = {p: r for p, r in rigs.items() if r.state in Rig.LIVE_STATES}
        on_disk = {
            w.path.resolve(): w
            for w in git.worktree_list(repo)
            if w.path.resolve().is_relative_to(worktree_root)
            and not w.path.name.startswith(git.TEMP_PREFIX)
        }
        for path, wt in on_disk.items():
            if path in live:
                continue
            detail = f"worktree {path} (branch {wt.branch or 'detached'}) has no live rig"
            removable = False
            if repair and path.is_dir() and not git.is_dirty(path):
                target = git.resolve_branch(repo, repository.target_branch)
                head = wt.head or None
                removable = bool(target and head and not git.commits_between(repo, target, head))
            if removable:
                git.worktree_remove(repo, path)
                detail += "; removed (clean and fully merged)"
            elif repair:
                detail += "; kept: it holds unmerged or uncommitted work"
            report.add("orphan_worktree", repository, detail, repaired=removable)
        for path, rig in live.items():
            tip = git.resolve_branch(repo, rig.branch)
            if path not in on_disk or not path.is_dir():
                detail = f"rig {rig.slug}: worktree {path} is missing"
                repaired = False
                if repair and tip is not None:
                    rig_worktree_recreate(rig)
                    detail += "; re-created from its branch"
                    repaired = True
                elif tip is None:
                    detail += f" and branch {rig.branch} is gone"
                report.add("worktree_missing", repository, detail, repaired=repaired)
            if tip is not None and rig.head_commit and tip != rig.head_commit:
                detail = (
                    f"rig {rig.slug}: branch {rig.branch} moved outside Gas Town "
                    f"({rig.head_commit[:10]} -> {tip[:10]})"
                )
                if repair:
                    rig_sync_run(rig.id)
                    detail += "; synced"
                report.add("branch_moved", repository, detail, repaired=repair)
    return report


def commit_keep(repository: Repository, label: str, sha: str) -> str:
    """Save a commit nothing reaches any more under `refs/gastown/archive/<label>/recovered-
    <sha>` (the audit's repair of lost work; a no-op when that ref is there). Returns the ref."""
    ref = f"refs/gastown/archive/{label}/recovered-{sha[:12]}"
    if git.rev_parse(repository.path, ref) is None:
        git.update_ref(repository.path, ref, sha, git.ZERO_OID)
    return ref


def rig_worktree_recreate(rig: Rig) -> bool:
    """Check a live rig's branch out again at its worktree path (reconcile's repair, and a
    restore from a backup); a no-op when it is there. False when the branch is gone."""
    repo = rig.repository.path
    if git.resolve_branch(repo, rig.branch) is None:
        return False
    worktree = Path(rig.worktree_path)
    _private_parents(worktree)
    sparse = (rig.scope + rig.watch) if rig.sparse else None
    git.worktree_add(repo, worktree, rig.branch, sparse_paths=sparse)
    return True


def rig_rebase_run(*, rig: Rig, onto: str) -> bool:
    """Rebase an idle rig's worktree onto `onto` (a commit of its target), under the rig's lock,
    then record a sync (head, ahead/behind, changed files) the way `rig_sync_run` does. Returns
    whether it was rebased: False when another worker holds the rig, when the rig is no longer
    live, its worktree is missing or dirty, or the rebase conflicts (then it is aborted and the
    worktree left as it was). Asked for by cascades, which decide when a rig should be kept
    current; nothing else here decides that."""
    worktree = Path(rig.worktree_path) if rig.worktree_path else None
    if worktree is None or not worktree.is_dir():
        return False
    with rig_exclusive(rig) as mine:
        if not mine:
            return False
        current = Rig.objects.select_related("repository").get(pk=rig.pk)
        if current.state not in Rig.LIVE_STATES:
            return False
        try:
            if git.is_dirty(worktree) or not git.rebase_worktree(worktree, onto):
                return False
        except git.GitError as exc:
            logger.warning("rig %s: rebase onto %s failed: %s", rig.slug, onto[:12], exc)
            return False
        rig_sync_run(current.id)
    return True
