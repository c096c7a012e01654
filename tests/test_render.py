"""The render matrix: every valid answer combination yields a clean, complete, lint-free project.

Fast checks only (no dependency install): leftover Jinja, syntax, answers file, file modes, ruff.
The generated project's own toolchain runs in test_generated_project.py.
"""

from __future__ import annotations

import ast
import re
import stat
import sys
import tomllib
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import QUESTIONS, TEMPLATE_TAG, Render, run

BACKENDS: list[str] = list(QUESTIONS["google_backends"]["choices"].values())
DATABASES: list[str] = list(QUESTIONS["database"]["choices"].values())
PYTHONS: list[str] = list(QUESTIONS["python_version"]["choices"])


def backend_combinations() -> list[list[str]]:
    """Every google_backends answer that validates: tasks need Cloud Tasks or Cloud Run Jobs."""
    subsets = [list(c) for size in range(1, len(BACKENDS) + 1) for c in combinations(BACKENDS, size)]
    return [s for s in subsets if {"cloud_tasks", "cloud_run_jobs"} & set(s)]


def matrix() -> list[Any]:
    """Each valid backend combination on each database, the Python versions taking turns."""
    cases = []
    for row, backends in enumerate(backend_combinations()):
        for column, database in enumerate(DATABASES):
            python = PYTHONS[(row + column) % len(PYTHONS)]
            answers = {"google_backends": backends, "database": database, "python_version": python}
            cases.append(pytest.param(answers, id=f"{database}-{'+'.join(backends)}-py{python}"))
    return cases


# Leftover Jinja: a naive `{{` search flags Python dict literals, so look for the question names
# and Jinja statements instead. Django templates legitimately use `{% if %}`, so statements are
# only searched outside them.
_NAMES = "|".join([*sorted(name for name in QUESTIONS if not name.startswith("_")), r"_copier_\w+"])
LEFTOVER_VARIABLE = re.compile(rf"{{{{-?\s*({_NAMES})\b")
LEFTOVER_STATEMENT = re.compile(r"{%-?\s*(if|elif|else|endif|for|endfor|set|raw|endraw|include|from|macro)\b")


def is_django_template(path: Path) -> bool:
    return "templates" in path.parts and path.suffix in {".html", ".txt"}


@pytest.fixture(scope="module", params=matrix())
def rendered(request: pytest.FixtureRequest, render: Render, tmp_path_factory: pytest.TempPathFactory) -> Any:
    answers: dict[str, Any] = request.param
    dst = render(tmp_path_factory.mktemp("render") / "service", **answers)
    return dst, answers


def project_files(dst: Path) -> list[Path]:
    return sorted(
        path
        for path in dst.rglob("*")
        if path.is_file() and not ({"__pycache__", ".ruff_cache"} & set(path.relative_to(dst).parts))
    )


def test_no_template_suffix_left(rendered: Any) -> None:
    dst, _ = rendered
    assert [p for p in project_files(dst) if p.name.endswith(".jinja")] == []


def test_no_unrendered_jinja(rendered: Any) -> None:
    dst, _ = rendered
    problems = []
    for path in [dst, *dst.rglob("*")]:
        relative = path.relative_to(dst)
        if "{{" in str(relative) or "{%" in str(relative):
            problems.append(f"{relative}: unrendered file name")
    for path in project_files(dst):
        text = path.read_text(errors="replace")
        patterns = (
            [LEFTOVER_VARIABLE] if is_django_template(path) else [LEFTOVER_VARIABLE, LEFTOVER_STATEMENT]
        )
        for pattern in patterns:
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{path.relative_to(dst)}:{line}: {match.group(0)!r}")
    assert problems == []


def test_python_files_parse(rendered: Any) -> None:
    dst, _ = rendered
    for path in project_files(dst):
        if path.suffix == ".py":
            ast.parse(path.read_text(), filename=str(path))


def test_toml_and_yaml_files_load(rendered: Any) -> None:
    dst, _ = rendered
    for path in project_files(dst):
        if path.suffix == ".toml":
            tomllib.loads(path.read_text())
        elif path.suffix in {".yml", ".yaml"}:
            yaml.safe_load(path.read_text())


def test_text_files_end_with_one_newline(rendered: Any) -> None:
    dst, _ = rendered
    bad = []
    for path in project_files(dst):
        data = path.read_bytes()
        if data and b"\0" not in data and (not data.endswith(b"\n") or data.endswith(b"\n\n")):
            bad.append(str(path.relative_to(dst)))
    assert bad == []


def test_answers_file_records_answers_not_computed_values(rendered: Any, template_repo: Path) -> None:
    dst, answers = rendered
    recorded = yaml.safe_load((dst / ".copier-answers.yml").read_text())
    assert recorded["_commit"] == TEMPLATE_TAG
    assert recorded["_src_path"] == str(template_repo)
    for name, value in answers.items():
        assert recorded[name] == value
    assert recorded["project_name"] == "Acme Orders"
    assert recorded["project_slug"] == "acme_orders"
    assert recorded["service_name"] == "acme-orders"
    assert "lock_dependencies" not in recorded
    asked = {
        name for name, spec in QUESTIONS.items() if not name.startswith("_") and spec.get("when") is not False
    }
    assert set(recorded) - {"_commit", "_src_path"} == asked


def test_answers_shape_the_project(rendered: Any) -> None:
    dst, answers = rendered
    pyproject = tomllib.loads((dst / "pyproject.toml").read_text())
    assert (dst / ".python-version").read_text().strip() == answers["python_version"]
    assert pyproject["project"]["requires-python"] == f">={answers['python_version']}"
    assert pyproject["project"]["name"] == "acme-orders"
    runtime_psycopg = any(dep.startswith("psycopg") for dep in pyproject["project"]["dependencies"])
    assert runtime_psycopg == (answers["database"] == "postgres")
    assert (dst / "acme_orders" / "tasks.py").is_file()


def test_vendored_app_is_copied_verbatim(rendered: Any, template_repo: Path) -> None:
    """The vendored app is never templated, so `copier update` merges it line by line."""
    dst, _ = rendered
    source = template_repo / "template" / "django_tasks_google"
    for path in source.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert not path.name.endswith(".jinja"), f"{path}: the vendored app must stay plain Python"
            copy = dst / "django_tasks_google" / path.relative_to(source)
            assert copy.read_bytes() == path.read_bytes(), f"{copy} differs from its template"


def test_manage_py_is_executable(rendered: Any) -> None:
    dst, _ = rendered
    assert (dst / "manage.py").stat().st_mode & stat.S_IXUSR


def test_ruff_passes(rendered: Any) -> None:
    """The root's ruff with the project's own config (the project's pinned ruff runs in the slow tier)."""
    dst, _ = rendered
    ruff = str(Path(sys.executable).with_name("ruff"))
    run([ruff, "check", "--no-cache", "."], dst)
    run([ruff, "format", "--check", "--no-cache", "."], dst)


def test_matrix_covers_every_choice() -> None:
    """The matrix is read from copier.yml, so a new choice is rendered without editing this file."""
    cases = [param.values[0] for param in matrix()]
    assert {case["database"] for case in cases} == set(DATABASES)
    assert {case["python_version"] for case in cases} == set(PYTHONS)
    assert {backend for case in cases for backend in case["google_backends"]} == set(BACKENDS)
