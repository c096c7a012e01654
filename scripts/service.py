"""Rendering this template into a working service: shared by the demo, the dev project and bench/.

Each renders from the working tree (`vcs_ref="HEAD"`, so uncommitted changes are included and a
release tag is never picked instead) and installs the service with the dev group's uv, in an
environment cleaned of this repository's virtualenv, Python and settings.
"""

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import copier

ROOT = Path(__file__).resolve().parent.parent
# The dev group's uv: pyenv's `uv` shim fails inside a project whose .python-version is 3.13.
UV = Path(sys.executable).with_name("uv")
# This repo's state that must not reach the service's processes. pyenv's shims export
# PYENV_VERSION and PYENV_DIR (this repo's 3.12); without them the service's own
# .python-version picks its interpreter.
LEAKY_VARIABLES = {
    "VIRTUAL_ENV",
    "PYENV_VERSION",
    "PYENV_DIR",
    "DATABASE_URL",
    "DJANGO_SETTINGS_MODULE",
    "TASKS_TARGET",
}


def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for commands run in a rendered service."""
    env = {key: value for key, value in os.environ.items() if key not in LEAKY_VARIABLES}
    env["UV_PYTHON_DOWNLOADS"] = "never"  # use installed Pythons; downloads may be unreachable
    env.update(extra or {})
    return env


def render_service(dest: Path, answers: Mapping[str, object], *, overwrite: bool = False) -> None:
    """Render the working tree into `dest` with default answers except `answers`.

    `uv lock` is left to the caller (the template's own lock task is skipped): it must run with
    the dev group's uv, see `UV`.
    """
    copier.run_copy(
        str(ROOT),
        dest,
        data={"lock_dependencies": False, **answers},
        vcs_ref="HEAD",
        defaults=True,
        unsafe=True,
        skip_tasks=True,
        quiet=True,
        overwrite=overwrite,
    )


def run_in_service(dest: Path, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a command in the service's directory with `service_env()`."""
    return subprocess.run([str(arg) for arg in args], cwd=dest, env=service_env(), check=check)
