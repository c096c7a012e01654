"""The generated project's own CI (`.github/workflows/ci.yml`), for each answer that changes it.

Only `database` changes the workflow. It must be a valid GitHub workflow (GitHub's schema, as
published in SchemaStore, through check-jsonschema), start PostgreSQL as a service container, point
DATABASE_URL at it, and run the same checks a developer runs: ruff, mypy, import-linter, pending
migrations, pytest.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import UV, Render, run

WORKFLOW = ".github/workflows/ci.yml"


@pytest.fixture(params=["postgres", "sqlite"])
def rendered(request: pytest.FixtureRequest, render: Render, tmp_path: Path) -> tuple[str, Path]:
    database = request.param
    return database, render(tmp_path / "service", database=database)


def steps_run(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_ci_workflow_is_valid_and_tests_on_postgresql(rendered: tuple[str, Path]) -> None:
    database, project = rendered
    run([UV.parent / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", WORKFLOW], project)
    workflow = yaml.safe_load((project / WORKFLOW).read_text())
    assert set(workflow[True]) == {"push", "pull_request"}  # YAML 1.1 reads the `on:` key as True
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()

    postgres = job["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "--health-cmd pg_isready" in postgres["options"]
    postgres_url = f"postgres://postgres:{postgres['env']['POSTGRES_PASSWORD']}@localhost:5432/acme_orders"
    if database == "postgres":
        assert job["env"]["DATABASE_URL"] == postgres_url
        assert "strategy" not in job
    else:
        # A SQLite project is tested on both: SQLite, what it runs on, and PostgreSQL.
        assert job["env"]["DATABASE_URL"] == "${{ matrix.database-url }}"
        assert job["strategy"]["matrix"]["database-url"] == [postgres_url, "sqlite:///db.sqlite3"]

    commands = steps_run(job)
    for command in [
        "uv sync --locked",
        "uv run ruff check .",
        "uv run ruff format --check .",
        "uv run mypy",
        "uv run lint-imports",
        "uv run python manage.py makemigrations --check --dry-run",
        "uv run pytest",
    ]:
        assert command in commands.splitlines(), command
    assert any(step.get("uses", "").startswith("astral-sh/setup-uv@") for step in job["steps"])
