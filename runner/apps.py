from django.apps import AppConfig


class RunnerConfig(AppConfig):
    name = "runner"
    verbose_name = "Agent runs"

    def ready(self) -> None:
        from rigs.auth import TOKEN_KINDS
        from runner import receivers  # noqa: F401  (launches agents when convoys hand out work)
        from runner.auth import run_principal
        from runner.models import AgentRun

        TOKEN_KINDS[AgentRun.TOKEN_PREFIX] = run_principal
