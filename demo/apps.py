from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo `make run` seeds: the sample application (real files) and its convoy."""

    name = "demo"
    verbose_name = "Demo"
