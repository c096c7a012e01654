"""The generated README: complete (no placeholders), its links resolve, and its table of environment
variables lists every variable the settings and gunicorn.conf.py read."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import VARIANTS, Render

PLACEHOLDERS = re.compile(r"to follow|\bTODO\b|\bTBD\b|\bFIXME\b|\bXXX\b", flags=re.IGNORECASE)
ENVIRON_READERS = {"env_bool", "env_list", "getenv"}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def project(request: pytest.FixtureRequest, render: Render, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("readme") / "service", **VARIANTS[request.param])


def variables_read(source: str) -> set[str]:
    """Names of the environment variables a module reads.

    `os.environ.get("X")`, `os.environ["X"]`, `os.getenv("X")`, `env_bool("X", ...)`,
    `env_list("X")`, and the values of a literal {option: "X"} mapping iterated by a comprehension
    that reads `os.environ[...]` (how the optional GOOGLE_TASK_OPTIONS are read).
    """
    names: set[str] = set()

    def is_environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    def constant(node: ast.AST | None) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            reads = (isinstance(func, ast.Attribute) and func.attr == "get" and is_environ(func.value)) or (
                (isinstance(func, ast.Name) and func.id in ENVIRON_READERS)
                or (isinstance(func, ast.Attribute) and func.attr == "getenv")
            )
            if reads and (name := constant(node.args[0])):
                names.add(name)
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            if name := constant(node.slice):
                names.add(name)
        elif isinstance(node, ast.DictComp | ast.ListComp | ast.SetComp):
            reads_environ = any(is_environ(inner) for inner in ast.walk(node))
            for generator in node.generators:
                mapping = generator.iter
                if isinstance(mapping, ast.Call) and isinstance(mapping.func, ast.Attribute):
                    mapping = mapping.func.value  # {...}.items()
                if reads_environ and isinstance(mapping, ast.Dict):
                    names |= {value for value in map(constant, mapping.values) if value}
    return names


def documented_variables(readme: str) -> set[str]:
    section = readme[readme.index("## Configuration: environment variables") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split(" | ")[0])}


def test_variables_read_finds_every_form() -> None:
    source = """
import os
A = os.environ.get("ONE", "x")
B = os.environ["TWO"]
C = env_bool("THREE", default=False)
D = env_list("FOUR")
E = {option: os.environ[variable] for option, variable in {"o": "FIVE"}.items() if os.environ.get(variable)}
F = int(os.environ.get("SIX", "1"))
"""
    assert variables_read(source) == {"ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX"}


def test_readme_has_no_placeholders(project: Path) -> None:
    readme = (project / "README.md").read_text()
    assert PLACEHOLDERS.findall(readme) == []


def test_every_variable_read_has_a_row(project: Path) -> None:
    read = variables_read((project / "config" / "settings.py").read_text())
    read |= variables_read((project / "gunicorn.conf.py").read_text())
    assert "DATABASE_URL" in read and "TASKS_OIDC_CERTS_URL" in read  # the parser sees both forms
    missing = sorted(read - documented_variables((project / "README.md").read_text()))
    assert missing == [], f"add a row to the README's environment variable table for {missing}"


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_internal_links_resolve(project: Path) -> None:
    readme = (project / "README.md").read_text()
    outside_code = re.sub(r"```.*?```", "", readme, flags=re.DOTALL)
    anchors = {heading_anchor(line.lstrip("#")) for line in outside_code.splitlines() if line.startswith("#")}
    links = set(re.findall(r"\]\(#([^)]+)\)", readme))
    assert links, "the README links its own sections"
    assert sorted(links - anchors) == []


@pytest.mark.parametrize(
    ("answers", "present", "absent"),
    [
        (
            {"database": "postgres", "google_backends": ["cloud_tasks", "cloud_run_jobs", "cloud_scheduler"]},
            ["docker compose up -d --wait db", "sync_scheduled_tasks", "## Recovery and retention", "`jobs`"],
            ["## Running on Cloud Run with SQLite"],
        ),
        (
            {"database": "sqlite", "google_backends": ["cloud_run_jobs"]},
            ["## Running on Cloud Run with SQLite", "Two commands"],
            ["docker compose", "sync_scheduled_tasks   #", "## Recovery and retention", "`jobs`"],
        ),
    ],
    ids=["postgres-all", "sqlite-jobs"],
)
def test_readme_follows_the_answers(
    render: Render, tmp_path: Path, answers: dict[str, Any], present: list[str], absent: list[str]
) -> None:
    readme = (render(tmp_path / "service", **answers) / "README.md").read_text()
    assert [text for text in present if text not in readme] == []
    assert [text for text in absent if text in readme] == []
