from django.apps import AppConfig


class RigsConfig(AppConfig):
    name = "rigs"
    verbose_name = "Rigs and merge queue"

    def ready(self) -> None:
        from rigs import schema  # noqa: F401  (registers the token scheme with the schema)
