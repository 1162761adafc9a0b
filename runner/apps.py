import logging
import os

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


class RunnerConfig(AppConfig):
    name = "runner"
    verbose_name = "Agent runs"

    def ready(self) -> None:
        from common.process import RUN_MARKER
        from convoys.services.leases import CLAIM_RUN_FINDERS
        from rigs.auth import TOKEN_KINDS
        from runner import receivers  # noqa: F401  (launches agents when convoys hand out work)
        from runner.auth import run_principal
        from runner.models import AgentRun
        from runner.selectors import claim_holder_run

        TOKEN_KINDS[AgentRun.TOKEN_PREFIX] = run_principal
        if claim_holder_run not in CLAIM_RUN_FINDERS:  # a claim is held by the agent's run
            CLAIM_RUN_FINDERS.append(claim_holder_run)
        # once per server or worker process (a run's supervisor says so in the run's log)
        if settings.GASTOWN_SANDBOX == "none" and RUN_MARKER not in os.environ:
            logger.warning(
                "GASTOWN_SANDBOX=none: agents, gates and setup commands run unsandboxed, as this "
                "server's user, and can read its data dir, database and every worktree. Install "
                "bubblewrap (make sandbox-deps) and unset GASTOWN_SANDBOX. See docs/runner.md."
            )
