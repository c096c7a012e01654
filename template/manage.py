#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent

# Long-running commands that would otherwise start, then log the same connection traceback on every
# request or poll: they check the database first. Other commands fail on their first query, which
# main() turns into the same one line.
CHECK_DATABASE_FIRST = {"runserver", "run_tasks", "demo_tasks"}


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


def unreachable_database() -> str | None:
    """One line saying which database cannot be reached and how to get one; None if it answers."""
    from django.conf import settings
    from django.db import OperationalError, connection

    try:
        connection.ensure_connection()
    except OperationalError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    else:
        return None
    finally:
        connection.close()
    url = urlsplit(settings.DATABASE_URL)
    credentials, at, host = url.netloc.rpartition("@")
    if ":" in credentials:  # never print the password
        url = url._replace(netloc=credentials.partition(":")[0] + ":***" + at + host)
    hint = "set DATABASE_URL (in .env or the environment) to a reachable database"
    if url.scheme.startswith("postgres") and (BASE_DIR / "compose.yaml").is_file():
        hint = "start the local one with `docker compose up -d --wait db`, or " + hint
    return f"Cannot reach the database {urlunsplit(url)} ({reason}): {hint}."


def main() -> None:
    load_local_env(BASE_DIR / ".env")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.core.management import execute_from_command_line
    from django.db import OperationalError

    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in CHECK_DATABASE_FIRST:
        django.setup()
        if problem := unreachable_database():
            sys.exit(problem)
    try:
        execute_from_command_line(sys.argv)
    except OperationalError:
        # Only a database that cannot be reached at all becomes one line; other errors stay whole.
        if problem := unreachable_database():
            sys.exit(problem)
        raise


# The guard matters: the local worker starts task processes that re-import __main__.
if __name__ == "__main__":
    main()
