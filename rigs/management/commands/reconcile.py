from django.core.management.base import BaseCommand

from rigs.models import Repository
from rigs.operations import reconcile_run


class Command(BaseCommand):
    help = "Compare rigs in the database with worktrees and branches on disk; report drift."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--repair", action="store_true", help="Fix what is safe to fix.")
        parser.add_argument("--repository", help="Only this repository (by name).")

    def handle(self, *args, repair: bool, repository: str | None, **options) -> None:
        repo_id = Repository.objects.get(name=repository).pk if repository else None
        report = reconcile_run(repository_id=repo_id, repair=repair)
        if not report.drifts:
            self.stdout.write("No drift.")
        for drift in report.drifts:
            mark = "repaired" if drift.repaired else "found"
            self.stdout.write(f"[{mark}] {drift.repository}: {drift.kind}: {drift.detail}")
