"""Slow tier: each VARIANTS project runs its own toolchain, exactly as its developers would.

`uv lock` + `uv sync --locked` (in the `synced_project` fixture), then the project's pytest suite
on its own database (PostgreSQL for the postgres variant; the SQLite ones leave out its
`google_e2e` tests, see `suite_selection`), ruff, mypy, import-linter, pending migrations and
Django's system checks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import VARIANTS, database_url, uv

pytestmark = pytest.mark.slow

SyncedProject = Callable[[str], Path]


# Under xdist (`--dist loadgroup`), a variant's tests share one worker and so one synced project.
@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in sorted(VARIANTS)])
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def project(variant: str, synced_project: SyncedProject) -> Path:
    return synced_project(variant)


@pytest.fixture
def postgres_server(variant: str, request: pytest.FixtureRequest) -> str | None:
    """The test PostgreSQL server for PostgreSQL variants (started only when one needs it)."""
    if VARIANTS[variant]["database"] != "postgres":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def database_env(postgres_server: str | None) -> dict[str, str]:
    """DATABASE_URL for commands: the server's maintenance database `postgres`, which always exists,
    so commands that peek at the database (makemigrations' history check) see a real one."""
    return {"DATABASE_URL": database_url(postgres_server, "postgres")} if postgres_server else {}


@pytest.fixture
def suite_database_env(variant: str, postgres_server: str | None) -> dict[str, str]:
    """pytest-django creates and drops test_<name>: a name per variant keeps shared servers tidy."""
    if not postgres_server:
        return {}
    return {"DATABASE_URL": database_url(postgres_server, f"tpl_{variant.replace('-', '_')}")}


def manage(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return uv(project, "run", "--locked", "python", "manage.py", *args, env=env).stdout


def suite_selection(variant: str) -> list[str]:
    """The generated suite's `google_e2e` tests (production settings under gunicorn, the emulated
    Google, job containers: the path a PostgreSQL deployment runs) run in the PostgreSQL project
    only: it has every backend, so none of them skips there, while a SQLite project deploys none
    of that path (it is one container running the local worker). Running them in every variant
    would only add CI time."""
    return [] if VARIANTS[variant]["database"] == "postgres" else ["-m", "not google_e2e"]


def test_generated_suite_passes(variant: str, project: Path, suite_database_env: dict[str, str]) -> None:
    pytest_args = ["-q", "-p", "no:cacheprovider", *suite_selection(variant)]
    uv(project, "run", "--locked", "pytest", *pytest_args, env=suite_database_env)


def test_google_e2e_marks_tests_of_the_generated_suite(project: Path) -> None:
    """The marker suite_selection leaves out is in use: a renamed one would silently run them all."""
    args = ["--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider", "-m", "google_e2e"]
    last = uv(project, "run", "--locked", "pytest", *args).stdout.strip().splitlines()[-1]
    selected = re.match(r"(\d+)/\d+ tests collected", last)
    assert selected and int(selected.group(1)) > 0, last


def test_ruff_check_passes(project: Path) -> None:
    uv(project, "run", "--locked", "ruff", "check", "--no-cache", ".")


def test_ruff_format_check_passes(project: Path) -> None:
    uv(project, "run", "--locked", "ruff", "format", "--check", "--no-cache", ".")


# The vendored app, which mypy and lint-imports check, is the same in every variant: check it once
# per Python version (the variants differ only in settings and dependencies around it).
ONE_VARIANT_PER_PYTHON = sorted(
    {spec["python_version"]: name for name, spec in sorted(VARIANTS.items())}.values()
)
once_per_python = pytest.mark.parametrize(
    "variant",
    [pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in ONE_VARIANT_PER_PYTHON],
    indirect=True,
)


@once_per_python
def test_mypy_passes(project: Path) -> None:
    """Strict on the vendored app, with the project's own config and pinned mypy and stubs."""
    uv(project, "run", "--locked", "mypy", "--no-incremental")


@once_per_python
def test_import_layers_hold(project: Path) -> None:
    """The vendored app's layering contract ([tool.importlinter] in the project's pyproject)."""
    uv(project, "run", "--locked", "lint-imports", "--no-cache")


def test_no_pending_migrations(project: Path, database_env: dict[str, str]) -> None:
    manage(project, "makemigrations", "--check", "--dry-run", env=database_env)


def test_system_checks_pass(project: Path, database_env: dict[str, str]) -> None:
    manage(project, "check", "--fail-level", "WARNING", env=database_env)


@pytest.mark.parametrize("target", ["local", "google"])
def test_task_backends_follow_the_answers(project: Path, variant: str, target: str) -> None:
    """google_backends decides which backend serves each alias; TASKS_TARGET=local swaps in the worker."""
    script = "import json; from django.conf import settings; print(json.dumps(settings.TASKS))"
    tasks = json.loads(manage(project, "shell", "--no-imports", "-c", script, env={"TASKS_TARGET": target}))
    chosen = VARIANTS[variant]["google_backends"]
    expected_google = {
        "default": "CloudTasksBackend" if "cloud_tasks" in chosen else "CloudRunJobsBackend",
    }
    if {"cloud_tasks", "cloud_run_jobs"} <= set(chosen):
        expected_google["jobs"] = "CloudRunJobsBackend"
    backends = {alias: config["BACKEND"].rsplit(".", 1)[-1] for alias, config in tasks.items()}
    if target == "google":
        assert backends == expected_google
    else:
        assert backends == dict.fromkeys(expected_google, "ProcessBackend")
