"""Render a development copy of the template whose vendored app and tests are live.

    uv run python scripts/dev_project.py /tmp/dev-service [--data database=sqlite ...]

The project is rendered from the working tree (uncommitted changes included); then its
`django_tasks_google/` and `tests/` are replaced by symlinks into `template/`, so edits made in the
template are exercised at once by `uv run pytest` inside the dev project.
"""

import argparse
import shutil
import sys
from pathlib import Path

from service import ROOT, UV, render_service, run_in_service

LIVE_DIRS = ["django_tasks_google", "tests"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dest", type=Path)
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE", help="a copier answer")
    args = parser.parse_args()
    data: dict[str, object] = {}
    for item in args.data:
        key, _, value = item.partition("=")
        data[key] = value
    dest = args.dest.resolve()
    render_service(dest, data, overwrite=True)
    for name in LIVE_DIRS:
        target = dest / name
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        target.symlink_to(ROOT / "template" / name, target_is_directory=True)
    run_in_service(dest, UV, "sync")
    print(f"Dev project ready in {dest}; run `uv run pytest` there.", file=sys.stderr)


if __name__ == "__main__":
    main()
