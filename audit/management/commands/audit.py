import json

from django.core.management.base import BaseCommand

from audit.checks import audit_run


class Command(BaseCommand):
    help = (
        "Check the invariants that say nothing was lost (lost work, landings, gates, holders, "
        "worktrees, the event log, landed convoys) against the database and the disk. Prints "
        "each violation with its ids and commits; exits 1 when there is any."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--repair",
            action="store_true",
            help="Fix what needs no judgement (archive lost commits, recover stranded queues, "
            "return dead holders' claims, re-queue lost tasks, re-create missing worktrees, "
            "append missing events), then audit again and say what needs a person.",
        )
        parser.add_argument("--json", action="store_true", help="One JSON document on stdout.")

    def handle(self, *args, repair: bool, json: bool, **options) -> None:
        report = audit_run(repair=repair)
        if json:
            self.stdout.write(_dumps(report.as_dict()))
        else:
            self.stdout.write(report.text())
        if not report.clean:
            raise SystemExit(1)


def _dumps(data) -> str:
    return json.dumps(data, indent=2, default=str)
