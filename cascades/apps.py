from django.apps import AppConfig


class CascadesConfig(AppConfig):
    name = "cascades"
    verbose_name = "Cascades"

    def ready(self) -> None:
        from cascades import receivers  # noqa: F401  (connects to the rigs' domain signals)
