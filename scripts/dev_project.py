"""Render a development copy of the template whose vendored app and tests are live.

    uv run python scripts/dev_project.py /tmp/dev-service [--data database=sqlite ...]

The project is rendered from the working tree (uncommitted changes included); then its
`django_tasks_google/` and `tests/` are replaced by symlinks into `template/`, so edits made in the
template are exercised at once by `uv run pytest` inside the dev project.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import copier

ROOT = Path(__file__).resolve().parent.parent
LIVE_DIRS = ["django_tasks_google", "tests"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dest", type=Path)
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE", help="a copier answer")
    args = parser.parse_args()
    data: dict[str, object] = {"lock_dependencies": False}
    for item in args.data:
        key, _, value = item.partition("=")
        data[key] = value
    dest = args.dest.resolve()
    copier.run_copy(
        str(ROOT), dest, data=data, defaults=True, unsafe=True, skip_tasks=True, quiet=True, overwrite=True
    )
    for name in LIVE_DIRS:
        target = dest / name
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        target.symlink_to(ROOT / "template" / name, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    uv = Path(sys.executable).with_name("uv")  # the dev group's uv: pyenv shims may hide another
    subprocess.run([str(uv), "sync"], cwd=dest, env=env, check=True)
    print(f"Dev project ready in {dest}; run `uv run pytest` there.", file=sys.stderr)


if __name__ == "__main__":
    main()
