"""Shared plumbing of the benchmarks: a rendered service to measure in, and the result table.

The measurements run INSIDE a service rendered from this template, with that service's own
interpreter and dependencies (the root virtualenv has neither Django nor the Google libraries).
Without `--project` the service is rendered into a temporary directory and removed afterwards;
with `--project PATH` it is rendered there once and reused by later runs.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from service import UV, render_service, service_env  # noqa: E402  (scripts/ is not a package)

INSIDE = Path(__file__).resolve().parent / "inside"


def add_project_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project",
        type=Path,
        metavar="PATH",
        help="render the service here once and reuse it later (default: a temporary directory)",
    )


@contextmanager
def rendered_project(path: Path | None) -> Iterator[Path]:
    """A synced service to measure in: PATH as it is, PATH freshly rendered, or a temporary one."""
    if path is not None:
        path = path.resolve()
        if not (path / "manage.py").exists():
            render(path)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        dest = Path(tmp) / "service"
        render(dest)
        yield dest


def render(dest: Path) -> None:
    """Render the working tree into `dest` afresh, keeping only its virtualenv (so a re-sync is quick)."""
    print(f"Rendering and syncing a service in {dest} (--project PATH keeps one)", file=sys.stderr)
    if dest.exists():
        for child in dest.iterdir():
            if child.name != ".venv":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    render_service(dest, {"database": "sqlite"}, overwrite=True)
    subprocess.run([str(UV), "sync", "--quiet"], cwd=dest, env=service_env(), check=True)


def run_inside(
    project: Path,
    script: str,
    args: Sequence[str],
    *,
    database_url: str | None = None,
    app_path: Path | None = None,
) -> dict:
    """Run `bench/inside/<script>` with the service's interpreter; return the JSON it prints last.

    `app_path`: a directory holding another `django_tasks_google` to import instead of the project's.
    """
    env = service_env() | {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "TASKS_TARGET": "local",
        "GRPC_VERBOSITY": "ERROR",
        # The service refuses to start without a key unless DJANGO_DEBUG is on (.env is manage.py's).
        "DJANGO_SECRET_KEY": "bench-only-" + "k" * 50,
        # config, the vendored app, the sample tasks, tests.fakes (another vendored app first)
        "PYTHONPATH": ":".join([*([str(app_path)] if app_path else []), str(project)]),
        # Its own database file: a reused project's db.sqlite3 stays untouched.
        "DATABASE_URL": database_url or f"sqlite:///{project / 'bench.sqlite3'}",
    }
    python = project / ".venv" / "bin" / "python"
    argv = [str(python), str(INSIDE / script), *args]
    completed = subprocess.run(argv, cwd=project, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if completed.returncode != 0:
        sys.exit(f"{script} failed (exit code {completed.returncode}) in {project}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in [headers, ["-" * width for width in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
