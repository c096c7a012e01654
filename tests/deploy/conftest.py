"""Fixtures of the deployment tests: rendered cases of the matrix, the gcloud stand-in, processes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import VARIANTS, Render
from .support import CASES, Bootstrap, Rendered


@pytest.fixture(scope="module")
def render_case(render: Render, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Rendered]:
    """`render_case(case_id)`: the matrix case rendered once per module (linters take them all at once)."""
    cache: dict[str, Rendered] = {}

    def get(case_id: str) -> Rendered:
        if case_id not in cache:
            answers = CASES[case_id]
            cache[case_id] = (render(tmp_path_factory.mktemp("deploy") / "service", **answers), answers)
        return cache[case_id]

    return get


@pytest.fixture(scope="module", params=sorted(CASES))
def rendered(request: pytest.FixtureRequest, render_case: Callable[[str], Rendered]) -> Rendered:
    return render_case(request.param)


@pytest.fixture(scope="module")
def every_case(render_case: Callable[[str], Rendered]) -> list[Path]:
    return [render_case(case_id)[0] for case_id in sorted(CASES)]


@pytest.fixture
def bootstrap(rendered: Rendered, tmp_path: Path) -> Bootstrap:
    return Bootstrap(rendered[0], tmp_path)


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start background processes (text pipes); each is killed at the end if still running."""
    started: list[subprocess.Popen[str]] = []

    def start(argv: list[str], cwd: Path, env: dict[str, str], **pipes: Any) -> subprocess.Popen[str]:
        process = subprocess.Popen(argv, cwd=cwd, env=env, text=True, **pipes)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
