#!/usr/bin/env python
"""Django's command-line utility for Gas Town."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gastown_site.settings")
    from django.core.management import execute_from_command_line

    from gastown_site.database_check import database_missing, needs_database

    if needs_database(sys.argv) and (message := database_missing()):
        sys.exit(message)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
