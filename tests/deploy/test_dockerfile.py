"""The Dockerfile and .dockerignore of every answer combination: hadolint, one image for the
service and every job, no local state in the image, production defaults, and the supply chain
(read-only code, base images with an update path that pins digests, a pinned Copier).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from ..conftest import run
from .support import (
    CHECK_JSONSCHEMA,
    HADOLINT,
    Rendered,
    dockerfile_stages,
    dockerignore_patterns,
    env_assignments,
    is_ignored,
)


def test_dockerfiles_pass_hadolint(every_case: list[Path]) -> None:
    run([HADOLINT, "--failure-threshold", "info", *(dst / "Dockerfile" for dst in every_case)], Path.cwd())


def test_one_image_serves_the_service_and_every_job(rendered: Rendered) -> None:
    """CMD only: a Cloud Run job's args replace CMD, so a job's args must start with the executable."""
    dst, answers = rendered
    text = (dst / "Dockerfile").read_text()
    build, runtime = dockerfile_stages(text)
    instructions = [keyword for keyword, _ in build + runtime]
    assert "ENTRYPOINT" not in instructions
    if answers["database"] == "postgres":
        assert json.loads(dict(runtime)["CMD"]) == ["gunicorn", "config.wsgi:application"]
    else:
        # SQLite: the web server and the task worker share the container that holds the database.
        assert json.loads(dict(runtime)["CMD"]) == ["python", "deploy/single_container.py"]
        assert (dst / "deploy" / "single_container.py").is_file()
    assert not (dst / "deploy" / "single_container.py").exists() or answers["database"] == "sqlite"
    # The Python version is written out (no ARG), so Renovate can pin and update each FROM.
    assert "ARG " not in text
    assert all(
        rest.startswith(f"python:{answers['python_version']}-slim-trixie ")
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
        "db.sqlite3-wal",  # write-ahead log and its index, next to an open database
        "db.sqlite3-shm",
        "staticfiles/app.css",
        "tests/test_x.py",
        ".github/workflows/template-update.yml",
    ]
    kept = [
        "manage.py",
        "uv.lock",
        "pyproject.toml",
        ".python-version",
        "gunicorn.conf.py",
        "config/settings.py",
        "deploy/single_container.py",  # the SQLite image's CMD
    ]
    assert [path for path in left_out if not is_ignored(path, patterns)] == []
    assert [path for path in kept if is_ignored(path, patterns)] == []


def runtime_stage(dst: Path) -> list[tuple[str, str]]:
    return dockerfile_stages((dst / "Dockerfile").read_text())[-1]


def test_image_defaults_to_production(rendered: Rendered) -> None:
    """`docker run IMAGE` with no configuration must not serve debug pages (finding 3)."""
    dst, answers = rendered
    env = {
        k: v
        for keyword, rest in runtime_stage(dst)
        if keyword == "ENV"
        for k, v in env_assignments(rest).items()
    }
    assert env["DJANGO_DEBUG"] == "false"
    assert "DJANGO_SECRET_KEY" not in env, "no key baked into the image: settings refuse to start without one"
    if answers["database"] == "sqlite":
        assert env["TASKS_TARGET"] == "local"
        assert env["DATABASE_URL"] == "sqlite:////app/data/db.sqlite3"


def test_code_in_image_is_read_only_to_the_runtime_user(rendered: Rendered) -> None:
    """The code and its virtualenv belong to root; only SQLite's data directory is the app's (finding 7)."""
    dst, answers = rendered
    runtime = runtime_stage(dst)
    user = dict(runtime)["USER"]
    assert user.split(":")[0] not in {"0", "root"}
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == ["--from=build /app /app"], "copied without --chown: owned by root"
    runs_as_root = [rest for keyword, rest in runtime if keyword == "RUN"]
    chowns = [rest for rest in runs_as_root if "chown" in rest]
    if answers["database"] == "sqlite":
        assert chowns == ["chown -R 10001:10001 /app/data"]
        assert user.startswith("10001")
    else:
        assert chowns == []


def test_base_images_have_an_update_path_that_pins_digests(every_case: list[Path]) -> None:
    """Every image is tag-pinned, and Renovate pins digests and keeps them current (finding 7)."""
    for dst in every_case:
        text = (dst / "Dockerfile").read_text()
        images = re.findall(r"^FROM (\S+)", text, re.M) + re.findall(r"--from=([^\s/]+\.[^\s]+:\S+)", text)
        assert len(images) >= 3, images
        for image in images:
            name, _, tag = image.partition("@")[0].rpartition(":")
            assert name and tag and tag != "latest", image
        config = json.loads((dst / "renovate.json").read_text())
        assert {"docker:pinDigests", "helpers:pinGitHubActionDigests"} <= set(config["extends"])
        assert config["lockFileMaintenance"]["enabled"] is True
    run(
        [
            CHECK_JSONSCHEMA,
            "--builtin-schema",
            "vendor.renovate",
            *(dst / "renovate.json" for dst in every_case),
        ],
        Path.cwd(),
    )


def test_template_update_workflow_pins_copier(rendered: Rendered) -> None:
    dst, _ = rendered
    workflow = yaml.safe_load((dst / ".github" / "workflows" / "template-update.yml").read_text())
    installs = [
        step["run"]
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if "copier" in step.get("run", "")
    ]
    install = next(command for command in installs if "install" in command)
    assert re.search(r"copier==\d+\.\d+\.\d+\b", install), install
    # renovate.json's custom manager finds the pin where it is.
    config = json.loads((dst / "renovate.json").read_text())
    manager = next(m for m in config["customManagers"] if m.get("depNameTemplate") == "copier")
    pattern = manager["matchStrings"][0].replace("(?<", "(?P<")
    assert re.search(pattern, install)
