"""Render a service from this template and run its sample tasks on the local worker.

    uv run python scripts/demo.py [--force] [DEST]

Renders the working tree (uncommitted changes included) with the default answers except
`database=sqlite` into ./demo-service, locks and installs its dependencies, migrates its SQLite
database and runs `manage.py demo_tasks`, which starts the local worker, enqueues the sample tasks
and prints their results. Nothing outside DEST is touched, no cloud account is needed.
"""

import argparse
import shutil
import sys
from pathlib import Path

from service import ROOT, UV, render_service, run_in_service

DEFAULT_DEST = ROOT / "demo-service"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dest", nargs="?", type=Path, default=DEFAULT_DEST, help="default: ./demo-service")
    parser.add_argument("--force", action="store_true", help="replace DEST if it exists")
    args = parser.parse_args()
    dest: Path = args.dest.resolve()

    if dest.exists():
        if not args.force:
            sys.exit(f"{dest} already exists: pass --force to replace it, or choose another directory.")
        shutil.rmtree(dest)

    step(f"Rendering the template into {dest}")
    render_service(dest, {"database": "sqlite"})
    step("Installing its dependencies")
    in_project(dest, [UV, "lock"])
    in_project(dest, [UV, "sync", "--locked"])
    step("Creating its SQLite database")
    in_project(dest, [UV, "run", "--locked", "python", "manage.py", "migrate", "--no-input"])
    step("Running the sample tasks on the local worker")
    in_project(dest, [UV, "run", "--locked", "python", "manage.py", "demo_tasks"])
    step(
        f"Done. Explore the service:\n    cd {dest}\n"
        "    uv run python manage.py run_tasks   # the worker, in one terminal\n"
        "    uv run python manage.py runserver   # the site and /admin/, in another"
    )


def step(message: str) -> None:
    print(f"\n==> {message}", file=sys.stderr, flush=True)


def in_project(dest: Path, command: list[str | Path]) -> None:
    """Run a command in the demo project, isolated from this repo's virtualenv, Python and settings."""
    completed = run_in_service(dest, *command, check=False)
    if completed.returncode != 0:
        argv = " ".join(str(part) for part in command)
        sys.exit(f"`{argv}` failed (exit code {completed.returncode}) in {dest}.")


if __name__ == "__main__":
    main()
