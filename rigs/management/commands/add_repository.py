"""`manage.py add_repository PATH`: register a local git repository, as `POST
/api/v1/repositories/` does (the same service, the same checks: it must lie under
GASTOWN_REPOSITORY_ROOTS and have the target branch). Run by an admin at the shell, so it may
set the commands the server runs (the gate and the setup command)."""

import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from common.errors import error_text
from rigs import services


class Command(BaseCommand):
    help = (
        "Register a local git repository (it must lie under GASTOWN_REPOSITORY_ROOTS); then "
        "plan a convoy on it or ask for a rig."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", help="the repository (bare or not); relative to here")
        parser.add_argument("--name", default="", help="a slug (default: from the folder name)")
        parser.add_argument("--target", default="main", help="where work lands (default: main)")
        parser.add_argument(
            "--gate", default="", help="the gate command each merge must pass, e.g. 'make test'"
        )
        parser.add_argument(
            "--setup", default="", help="run once in each new worktree, e.g. 'make install'"
        )

    def handle(
        self, *args, path: str, name: str, target: str, gate: str, setup: str, **options
    ) -> None:
        # The API takes absolute paths only; at the shell a relative one means "from here".
        location = os.path.abspath(os.path.expanduser(path))
        name = name or services.repository_name_from_path(location)
        try:
            repository = services.repository_register(
                name=name,
                path=location,
                target_branch=target,
                gate_command=gate,
                setup_command=setup,
            )
        except ValidationError as exc:
            raise CommandError(error_text(exc)) from exc
        gate_text = f", gate `{repository.gate_command}`" if repository.gate_command else ""
        self.stdout.write(
            f"Registered repository '{repository.name}' (id {repository.id}) at "
            f"{repository.path}, target {repository.target_branch}{gate_text}.\n"
            "Next: plan a convoy on it (board: New convoy; `gt convoy create TITLE "
            f"--repository {repository.id} --leg KEY TITLE AGENT`), or ask for a rig on it "
            f'(POST /api/v1/rigs/ {{"repository": {repository.id}, "slug": "..."}}).'
        )
