"""The Dockerfile and .dockerignore of every answer combination: hadolint, one image for the
service and every job, no local state in the image.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..conftest import run
from .support import HADOLINT, Rendered, dockerfile_stages, dockerignore_patterns, env_assignments, is_ignored


def test_dockerfiles_pass_hadolint(every_case: list[Path]) -> None:
    run([HADOLINT, "--failure-threshold", "info", *(dst / "Dockerfile" for dst in every_case)], Path.cwd())


def test_one_image_serves_the_service_and_every_job(rendered: Rendered) -> None:
    """CMD only: a Cloud Run job's args replace CMD, so a job's args must start with the executable."""
    dst, answers = rendered
    text = (dst / "Dockerfile").read_text()
    build, runtime = dockerfile_stages(text)
    instructions = [keyword for keyword, _ in build + runtime]
    assert "ENTRYPOINT" not in instructions
    assert json.loads(dict(runtime)["CMD"]) == ["gunicorn", "config.wsgi:application"]
    assert f"ARG PYTHON_VERSION={answers['python_version']}\n" in text
    assert all(
        rest.startswith("python:${PYTHON_VERSION}-slim")
        for keyword, rest in build + runtime
        if keyword == "FROM"
    )
    assert re.fullmatch(r"\d+:\d+", dict(runtime)["USER"]), "a numeric non-root user"
    runtime_env = {
        k: v for keyword, rest in runtime if keyword == "ENV" for k, v in env_assignments(rest).items()
    }
    assert runtime_env["PYTHONUNBUFFERED"] == "1"
    assert runtime_env["DJANGO_SETTINGS_MODULE"] == "config.settings"
    # The dependency layer is built from the lock alone, before the code is copied in.
    runs = [rest for keyword, rest in build if keyword == "RUN"]
    copy_code = [i for i, (keyword, rest) in enumerate(build) if keyword == "COPY" and rest == ". ."]
    first_sync = next(i for i, (keyword, rest) in enumerate(build) if "uv sync" in rest)
    assert first_sync < copy_code[0]
    assert "uv sync --locked --no-dev --no-install-project" in runs[0]
    assert "source=uv.lock" in runs[0] and "source=pyproject.toml" in runs[0]
    assert any(rest.endswith("uv sync --locked --no-dev") for rest in runs[1:])
    assert any("manage.py collectstatic --noinput" in rest for rest in runs)
    migrate_at_build = any("manage.py migrate" in rest for rest in runs)
    assert migrate_at_build == (answers["database"] == "sqlite")


def test_dockerignore_keeps_local_state_out_of_the_image(rendered: Rendered) -> None:
    dst, _ = rendered
    patterns = dockerignore_patterns(dst)
    left_out = [
        ".venv/bin/python",
        ".env",
        ".git/HEAD",
        "db.sqlite3",
        "staticfiles/app.css",
        "tests/test_x.py",
    ]
    kept = [
        "manage.py",
        "uv.lock",
        "pyproject.toml",
        ".python-version",
        "gunicorn.conf.py",
        "config/settings.py",
    ]
    assert [path for path in left_out if not is_ignored(path, patterns)] == []
    assert [path for path in kept if is_ignored(path, patterns)] == []
