from django.apps import AppConfig


class RigsConfig(AppConfig):
    name = "rigs"
    verbose_name = "Rigs and merge queue"
