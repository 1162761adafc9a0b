from django.apps import AppConfig


class RunnerConfig(AppConfig):
    name = "runner"
    verbose_name = "Agent runs"

    def ready(self) -> None:
        from runner import receivers, schema  # noqa: F401  (signal receivers; token scheme)
