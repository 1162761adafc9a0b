"""`manage.py restore SRC`: put a backup made by `manage.py backup` back, onto an empty data dir
(and an empty database), checking its manifest first."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups.manifest import BackupError, count_text
from backups.operations import backup_restore
from rigs.git import GitError


class Command(BaseCommand):
    help = (
        "Restore a backup (a folder made by `manage.py backup`) onto an empty data dir "
        "(GASTOWN_DATA_DIR) and database: checks every file against the manifest, restores the "
        "database, makes each repository again from its bundle, copies the run logs back and "
        "checks every live rig's worktree out again. Refuses a data dir that is not empty."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("src", help="the backup's folder (it holds manifest.json)")
        parser.add_argument(
            "--repositories-root",
            metavar="DIR",
            help="put every repository in DIR/<its folder name> (inside "
            "GASTOWN_REPOSITORY_ROOTS); default: those from the old data dir at the same place "
            "in the new one, the others in <data dir>/repositories/",
        )

    def handle(self, *args, src: str, repositories_root: str | None, **options) -> None:
        root = Path(repositories_root).resolve() if repositories_root else None
        self.stdout.write(f"Restoring {Path(src).resolve()} into {settings.DATA_DIR}")
        try:
            report = backup_restore(Path(src), repositories_root=root, say=self.stdout.write)
        except (BackupError, GitError, OSError) as exc:
            raise CommandError(f"restore stopped: {exc}") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored: {count_text(len(report.repositories), 'repository')}, "
                f"{count_text(report.worktrees, 'rig worktree')}. Start Gas Town on it as usual "
                f"(GASTOWN_DATA_DIR={settings.DATA_DIR} make run)."
            )
        )
