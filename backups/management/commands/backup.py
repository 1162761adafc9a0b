"""`manage.py backup DEST`: an online-consistent copy of the whole installation (database, every
repository as a git bundle, the agents' run logs, a manifest), taken while it runs."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups.manifest import BackupError
from backups.operations import backup_create
from rigs.git import GitError


class Command(BaseCommand):
    help = (
        "Back up the database, every registered repository (all refs, as git bundles) and the "
        "agents' run logs into DEST (a new or empty folder), with a manifest.json of versions, "
        "sizes, sha256 sums and refs. Safe while Gas Town runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dest", help="a new or empty folder")

    def handle(self, *args, dest: str, **options) -> None:
        self.stdout.write(f"Backing up to {Path(dest).resolve()}")
        try:
            backup_create(Path(dest), say=self.stdout.write)
        except (BackupError, GitError, OSError) as exc:
            raise CommandError(f"backup stopped, nothing kept: {exc}") from exc
