"""`manage.py backup DEST` and `manage.py restore SRC`: the whole installation in one folder.

A backup is taken while everything runs, in this order: the database first (one consistent
snapshot), then one git bundle per repository (every ref: branches, rig branches,
`refs/gastown/archive/...`, tags), then the agents' run logs, then `manifest.json` (versions,
time, every file with its size and sha256, every repository with its refs and their commits).
Database first: git only adds commits, and a rig torn down meanwhile keeps its work under an
archive ref, so every commit the database names is in the bundles made after it. Branches that
moved in between are read again by the worker's sync of live rigs once the restored
installation runs.

A restore checks the manifest first, then refuses a data dir (or database) that is not empty,
and puts everything back: the database, each repository made again from its bundle (its refs
checked against the manifest), the run logs; then points the rows at the new places and checks
every live rig's branch out again in its worktree. Repositories that lived inside the old data
dir go to the same place inside the new one; the others go to `<data dir>/repositories/<their
folder name>`, or, with `--repositories-root DIR`, every repository goes to `DIR/<folder>`.
Either way the new paths must lie under GASTOWN_REPOSITORY_ROOTS.
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import django
from django.conf import settings
from django.db import connections
from django.utils import timezone

from backups import database, services
from backups.manifest import (
    FORMAT,
    BackupError,
    count_text,
    file_entry,
    inside,
    manifest_problems,
    manifest_read,
    manifest_write,
    size_text,
)
from common import process
from rigs import git, operations, paths
from rigs.models import Repository, Rig

Say = Callable[[str], None]
SECRET_KEY_FILE = "secret_key"
# What settings make in a data dir when any command starts: a data dir holding only these is
# still empty for a restore.
MADE_AT_START = (SECRET_KEY_FILE, "staticfiles", "metrics")  # what any manage.py makes


@dataclass
class BackupReport:
    path: Path
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def backup_create(dest: Path, *, say: Say = print) -> BackupReport:
    """Back the installation up into `dest` (a new or empty folder). On failure nothing is
    left in it."""
    dest = dest.resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not empty: back up into a new folder")
    made = not dest.exists()
    process.private_dir(dest)
    try:
        return _backup(dest, say)
    except BaseException:
        if made:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for entry in dest.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


def _backup(dest: Path, say: Say) -> BackupReport:
    started = timezone.now()
    files: list[Path] = []
    warnings: list[str] = []

    # 1. the database, first (see the module's docstring)
    db_file = database.database_dump(dest)
    files.append(db_file)
    say(f"database: {database.vendor()}, {db_file.name} ({size_text(db_file.stat().st_size)})")

    # 2. every repository, as a bundle
    bundles = process.private_dir(dest / "repositories")
    repositories = []
    for repository in Repository.objects.order_by("id"):
        entry = _repository_backup(repository, bundles, dest, warnings)
        repositories.append(entry)
        if entry["bundle"]:
            files.append(dest / entry["bundle"])
        say(f"repository {repository.name}: {_refs_text(entry['refs'])}")

    # 3. the agents' run logs (a log still being written is copied as far as it got; one the
    # hourly prune deleted meanwhile is left out)
    log_dir = Path(settings.GASTOWN_RUN_LOG_DIR)
    logs: list[Path] = []
    for log in sorted(log_dir.iterdir()) if log_dir.is_dir() else []:
        if log.is_file():
            runs = process.private_dir(dest / "runs")
            try:
                shutil.copy2(log, runs / log.name)
            except FileNotFoundError:
                continue
            logs.append(runs / log.name)
    files += logs
    if logs:
        total = sum(log.stat().st_size for log in logs)
        say(f"run logs: {count_text(len(logs), 'file')} ({size_text(total)})")

    # 4. the embedded default's generated SECRET_KEY (sessions and signatures stay valid)
    key = Path(settings.DATA_DIR) / SECRET_KEY_FILE
    if key.is_file():
        shutil.copy2(key, dest / SECRET_KEY_FILE)
        files.append(dest / SECRET_KEY_FILE)

    entries = [file_entry(dest, path) for path in files]
    manifest = {
        "format": FORMAT,
        "created_at": started.isoformat(),
        "finished_at": timezone.now().isoformat(),
        "versions": {
            "gastown": settings.GASTOWN_VERSION,
            "python": platform.python_version(),
            "django": django.get_version(),
            "git": git.git_version(),
            "database": database.server_version(),
        },
        "source": {
            "host": process.host_name(),
            "data_dir": str(settings.DATA_DIR),
            "run_log_dir": str(log_dir),
        },
        "database": {
            "vendor": database.vendor(),
            "file": db_file.name,
            "migrations": database.migrations_applied(),
        },
        "repositories": repositories,
        "run_logs": [f"runs/{log.name}" for log in logs],
        "secret_key": SECRET_KEY_FILE if key.is_file() else None,
        "warnings": warnings,
        "files": entries,
    }
    for warning in warnings:
        say(f"warning: {warning}")
    written = manifest_write(dest, manifest)
    total = sum(e["size"] for e in entries)
    say(f"Backup complete: {count_text(len(entries), 'file')} ({size_text(total)}) and {written}")
    return BackupReport(dest, manifest, warnings)


def _repository_backup(
    repository: Repository, bundles: Path, dest: Path, warnings: list[str]
) -> dict[str, Any]:
    path = Path(repository.path)
    data_dir = Path(settings.DATA_DIR).resolve()
    entry: dict[str, Any] = {
        "id": repository.id,
        "name": repository.name,
        "path": repository.path,
        # set when it lives in the data dir: restored to the same place in the new one
        "data_dir_path": (
            path.resolve().relative_to(data_dir).as_posix()
            if path.resolve().is_relative_to(data_dir)
            else None
        ),
        "target_branch": repository.target_branch,
        "bundle": None,
        "refs": {},
        "head": None,
        "bare": True,
        "object_format": "sha1",
        "missing": False,
        "dirty_worktrees": [],
    }
    if not git.is_repository(path):
        entry["missing"] = True
        warnings.append(f"repository {repository.name}: {path} is not a git repository: skipped")
        return entry
    bundle = bundles / f"{repository.id}-{repository.name}.bundle"
    info = git.bundle_create(path, bundle)
    entry.update(
        bundle=bundle.relative_to(dest).as_posix() if info.refs else None,
        refs=info.refs,
        head=info.head,
        bare=info.bare,
        object_format=info.object_format,
    )
    # Uncommitted work is in no bundle: say whose (agents commit what they mean to keep).
    live = repository.rigs.filter(state__in=Rig.LIVE_STATES).exclude(worktree_path="")
    for rig in live.order_by("slug"):
        if git.worktree_dirty(rig.worktree_path, timeout=30):
            entry["dirty_worktrees"].append(rig.slug)
            warnings.append(
                f"rig {rig.slug} ({repository.name}): uncommitted changes in its worktree are "
                "not in the backup"
            )
    return entry


def _refs_text(refs: dict[str, str]) -> str:
    if not refs:
        return "no commits yet"
    branches = sum(name.startswith("refs/heads/") for name in refs)
    archived = sum(name.startswith("refs/gastown/archive/") for name in refs)
    others = len(refs) - branches - archived
    parts = [count_text(branches, "branch"), count_text(archived, "archive ref")]
    if others:
        parts.append(count_text(others, "other ref"))
    return f"{count_text(len(refs), 'ref')}: {', '.join(parts)}"


# --- restore -------------------------------------------------------------------------------------


@dataclass
class RestoreReport:
    repositories: dict[str, Path] = field(default_factory=dict)
    worktrees: int = 0
    warnings: list[str] = field(default_factory=list)


def backup_restore(
    source: Path, *, repositories_root: Path | None = None, say: Say = print
) -> RestoreReport:
    """Restore the backup in `source` onto this (empty) data dir and database."""
    source = source.resolve()
    manifest = manifest_read(source)
    problems = manifest_problems(source, manifest)
    if problems:
        listed = "; ".join(problems[:10])
        raise BackupError(f"{source} does not match its manifest, nothing restored: {listed}")
    versions = manifest.get("versions", {})
    say(
        f"Checked {len(manifest['files'])} files against the manifest (backup of "
        f"{manifest['created_at']} on {manifest['source']['host']}, Gas Town "
        f"{versions.get('gastown', '?')})."
    )
    _check_compatible(manifest, say)
    _check_empty()
    targets = _repository_targets(manifest, repositories_root)

    data_dir = Path(settings.DATA_DIR).resolve()
    before = set(data_dir.iterdir()) if data_dir.is_dir() else set()
    process.private_dir(data_dir)
    made: list[Path] = []
    try:
        return _restore(source, manifest, targets, made, say)
    except (BackupError, git.GitError, OSError) as exc:
        _restore_undo(data_dir, before, made, say)
        raise BackupError(f"{exc} (what the restore had written is removed again)") from exc
    except BaseException:
        _restore_undo(data_dir, before, made, say)
        raise


def _restore_undo(data_dir: Path, before: set[Path], made: list[Path], say: Say) -> None:
    """Leave the data dir as empty as it was, so the restore can simply be run again."""
    connections.close_all()
    for path in [p for p in data_dir.iterdir() if p not in before] + made:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if database.vendor() != "sqlite":
        say(
            "The PostgreSQL database may hold the restored tables now: drop and create it "
            "again before the next try."
        )


def _check_compatible(manifest: dict[str, Any], say: Say) -> None:
    backed_up = manifest["database"]["vendor"]
    if backed_up != database.vendor():
        raise BackupError(
            f"the backup holds a {backed_up} database, but this installation uses "
            f"{database.vendor()}: set DATABASE_URL (PostgreSQL) or unset it (SQLite) to match"
        )
    applied = set(manifest["database"].get("migrations", []))
    unknown = sorted(applied - database.migrations_known())
    if unknown:
        raise BackupError(
            "the backup comes from a newer Gas Town (its database has migrations this code "
            f"lacks: {', '.join(unknown[:5])}): restore it with that version's code"
        )
    newer = database.migrations_known() - applied
    if newer:
        say(
            f"note: this code has {len(newer)} migrations the backup lacks; `manage.py migrate` "
            "applies them (make run does)"
        )


def _check_empty() -> None:
    """Refuse anything but an empty data dir, database and run log dir."""
    data_dir = Path(settings.DATA_DIR)
    if data_dir.exists() and not data_dir.is_dir():
        raise BackupError(f"the data dir {data_dir} is a file")
    found = [
        entry.name
        for entry in sorted(data_dir.iterdir() if data_dir.is_dir() else [])
        if not _made_at_start(entry)
    ]
    if found:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise BackupError(
            f"the data dir {data_dir} is not empty ({shown}): a restore goes only onto an empty "
            "one, so that it never mixes with or overwrites an installation. Set "
            "GASTOWN_DATA_DIR to a new folder (or empty this one) and run it again"
        )
    if occupied := database.database_occupied():
        raise BackupError(f"{occupied}: a restore goes only into an empty database")
    log_dir = Path(settings.GASTOWN_RUN_LOG_DIR)
    if log_dir.is_dir() and any(log_dir.iterdir()):
        raise BackupError(f"the run log dir {log_dir} (GASTOWN_RUN_LOG_DIR) is not empty")


def _made_at_start(entry: Path) -> bool:
    if entry.name not in MADE_AT_START:
        return False
    return entry.is_file() if entry.name == SECRET_KEY_FILE else not any(entry.iterdir())


def _repository_targets(
    manifest: dict[str, Any], repositories_root: Path | None
) -> dict[int, Path]:
    """Where each repository goes (see the module's docstring); refuses before anything is
    written when one would land outside GASTOWN_REPOSITORY_ROOTS or on something there."""
    data_dir = Path(settings.DATA_DIR).resolve()
    root = (repositories_root or data_dir / "repositories").resolve()
    targets: dict[int, Path] = {}
    for entry in manifest["repositories"]:
        if entry["missing"]:
            continue
        if repositories_root is None and entry.get("data_dir_path"):
            target = inside(data_dir, entry["data_dir_path"])
        else:
            folder = PurePosixPath(entry["path"]).name
            target = inside(root, folder)
            if target in targets.values():  # two folders of one name, from different places
                target = inside(root, f"{entry['id']}-{folder}")
        targets[int(entry["id"])] = target.resolve()
    roots = [Path(r).resolve() for r in settings.GASTOWN_REPOSITORY_ROOTS]
    for target in targets.values():
        if not any(target == r or target.is_relative_to(r) for r in roots):
            raise BackupError(
                paths.outside_roots_message(str(target), target, roots)
                + " Or restore with --repositories-root DIR, DIR inside those roots."
            )
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise BackupError(f"{target} exists and is not empty: a repository goes there")
    return targets


def _restore(
    source: Path,
    manifest: dict[str, Any],
    targets: dict[int, Path],
    made: list[Path],
    say: Say,
) -> RestoreReport:
    report = RestoreReport()
    if database.vendor() == "sqlite":
        made.append(database.sqlite_path())  # (when GASTOWN_SQLITE_PATH puts it elsewhere)
    where = database.database_restore(inside(source, manifest["database"]["file"]))
    say(f"database: {manifest['database']['vendor']}, restored into {where}")

    for entry in manifest["repositories"]:
        name = entry["name"]
        if entry["missing"]:
            report.warnings.append(f"repository {name} was missing at backup time: not restored")
            continue
        target = targets[int(entry["id"])]
        if not target.exists():
            made.append(target)
        bundle = inside(source, entry["bundle"]) if entry["bundle"] else None
        refs = git.repository_from_bundle(
            target,
            bundle,
            head=entry["head"],
            bare=entry["bare"],
            object_format=entry["object_format"],
        )
        wrong = sorted(ref for ref, sha in entry["refs"].items() if refs.get(ref) != sha)
        if wrong:
            raise BackupError(f"repository {name}: refs differ from the manifest: {wrong[:5]}")
        report.repositories[name] = target
        moved = f" (was {entry['path']})" if str(target) != entry["path"] else ""
        refs_checked = count_text(len(entry["refs"]), "ref")
        say(f"repository {name}: {refs_checked} checked, at {target}{moved}")

    log_dir = Path(settings.GASTOWN_RUN_LOG_DIR)
    if manifest["run_logs"]:
        process.private_dir(log_dir)
        for name in manifest["run_logs"]:
            copied = log_dir / PurePosixPath(name).name
            made.append(copied)
            shutil.copy2(inside(source, name), copied)
        say(f"run logs: {count_text(len(manifest['run_logs']), 'file')}, in {log_dir}")
    if manifest.get("secret_key"):
        key = Path(settings.DATA_DIR) / SECRET_KEY_FILE
        shutil.copy2(inside(source, manifest["secret_key"]), key)
        key.chmod(0o600)

    relocated = services.installation_relocate(
        repository_paths={rid: str(path) for rid, path in targets.items()},
        backup_created_at=manifest["created_at"],
        source_host=manifest["source"]["host"],
    )
    if relocated.runs_adopted:
        say(
            f"agent runs: {count_text(relocated.runs_adopted, 'run')} had a process at backup "
            "time: the worker finds it gone and restarts the run, as after a crash"
        )
    report.worktrees = _worktrees_recreate(report, say)
    for warning in report.warnings:
        say(f"warning: {warning}")
    return report


def _worktrees_recreate(report: RestoreReport, say: Say) -> int:
    """Check every live rig's branch out again at its (new) worktree path."""
    count = 0
    rigs = Rig.objects.select_related("repository").order_by("repository_id", "slug")
    restored = set(report.repositories)
    for rig in rigs.filter(state__in=Rig.LIVE_STATES):
        if rig.repository.name not in restored:
            continue  # its repository was missing at backup time (said above)
        if operations.rig_worktree_recreate(rig):
            count += 1
        else:
            report.warnings.append(
                f"rig {rig.slug}: branch {rig.branch} is not in the backup, so it has no "
                "worktree (`manage.py reconcile` reports it)"
            )
    waiting = rigs.filter(state__in=[Rig.State.REQUESTED, Rig.State.PROVISIONING])
    for rig in waiting:
        report.warnings.append(
            f"rig {rig.slug} was being provisioned at backup time, and nothing will finish "
            "that: tear it down and ask for it again"
        )
    say(f"rig worktrees: {count} checked out again under {settings.GASTOWN_WORKTREE_ROOT}")
    return count
