from django.apps import AppConfig


class ConvoysConfig(AppConfig):
    name = "convoys"
    verbose_name = "Convoys and beads"

    def ready(self) -> None:
        from convoys import receivers  # noqa: F401  (connects to the rigs' domain signals)
