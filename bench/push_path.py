"""In-process cost of a Cloud Tasks push to `/tasks/execute/`, against a bare INSERT view.

    uv run python bench/push_path.py [--requests 300] [--database-url URL] [--baseline-ref REF]
                                     [--project PATH]

Inside a rendered service: Django's test client posts real pushes (a real ID token from the local
issuer, Cloud Tasks' headers) that run a no-op task to completion, alternating with posts to a
view that does one INSERT (the floor of any view that writes). With `--baseline-ref REF` the same
measurement runs a second time with the vendored app as it is at git REF (e.g. `main`), so a
change to the push path is compared with what it replaces in one run. Prints ms per request and
the ratio to the bare view; timing never fails anything.
"""

import argparse
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from harness import ROOT, add_project_argument, print_table, rendered_project, run_inside


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="timed pushes (default: 300)")
    parser.add_argument("--database-url", help="measure on this database (default: SQLite in the project)")
    parser.add_argument("--baseline-ref", metavar="REF", help="also measure the vendored app at this git ref")
    add_project_argument(parser)
    args = parser.parse_args()

    runs = [("working tree", None)] + ([(args.baseline_ref, args.baseline_ref)] if args.baseline_ref else [])
    rows = []
    with rendered_project(args.project) as project, tempfile.TemporaryDirectory() as tmp:
        for label, ref in runs:
            app_path = None if ref is None else vendored_app_at(ref, Path(tmp) / "baseline")
            results = run_inside(
                project,
                "push_path.py",
                ["--requests", str(args.requests)],
                database_url=args.database_url,
                app_path=app_path,
            )
            execute, bare = results["execute"], results["bare"]
            rows.append(
                [
                    label,
                    f"{execute['median_ms']:.2f}",
                    f"{bare['median_ms']:.2f}",
                    f"{execute['median_ms'] / bare['median_ms']:.1f}x",
                ]
            )
    database = args.database_url.split("@")[-1] if args.database_url else "SQLite"
    print(f"\n{args.requests} timed pushes per run, {database}\n")
    print_table(["vendored app", "/tasks/execute/ ms", "bare INSERT ms", "execute / bare"], rows)


def vendored_app_at(ref: str, dest: Path) -> Path:
    """`template/django_tasks_google` as it is at git `ref`, extracted under `dest`."""
    archive = subprocess.run(
        ["git", "archive", ref, "template/django_tasks_google"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "template"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
