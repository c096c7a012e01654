#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys
from pathlib import Path


def load_local_env(path: Path) -> None:
    """Export the KEY=VALUE lines of the local `.env` file; variables already set win.

    Local convenience only: on Cloud Run (K_SERVICE or CLOUD_RUN_JOB set) configuration comes from
    the service's environment and secrets, so a `.env` that slipped into an image is ignored.
    """
    if os.environ.get("K_SERVICE") or os.environ.get("CLOUD_RUN_JOB") or not path.is_file():
        return
    for line in path.read_text().splitlines():
        key, separator, value = line.partition("=")
        key = key.strip()
        if separator and key and not key.startswith("#"):
            os.environ.setdefault(key, value.strip())


def main() -> None:
    load_local_env(Path(__file__).resolve().parent / ".env")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


# The guard matters: the local worker starts task processes that re-import __main__.
if __name__ == "__main__":
    main()
