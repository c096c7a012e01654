"""Playing Cloud Run Jobs in tests: start a job's task container as a real subprocess.

Cloud Run starts a task container with the image's ENTRYPOINT/CMD, the job's command and the
RunJob overrides, and the job's env plus the `CLOUD_RUN_*` variables. The fake
(`GoogleServicesFake.job_container`) knows the job and the overrides; this module adds the image
(read from the project's Dockerfile) and runs the resulting process in the project directory,
against the test database, like `WORKDIR /app` in the image.

The process gets the test's TASKS (through `tests.django_tasks_google.job_container_settings`), so
the backend it runs under is the one the test configured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import caches

from tests.fakes.google_services import GoogleServicesFake, JobContainer
from tests.processes import database_url

PROJECT = "test-project"
LOCATION = "europe-west1"
JOB_ID = "service-tasks"
JOB = f"projects/{PROJECT}/locations/{LOCATION}/jobs/{JOB_ID}"

PROJECT_ROOT = Path(settings.BASE_DIR)
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
# Seconds a job container may run in a test before it is considered hung.
CONTAINER_TIMEOUT = 60


@dataclass(frozen=True)
class Image:
    """The final stage's ENTRYPOINT and CMD, in exec form ([] when absent)."""

    entrypoint: list[str]
    cmd: list[str]


def jobs_backend(api_endpoint: str, queues: dict[str, str], **options: Any) -> dict[str, Any]:
    """A TASKS entry for CloudRunJobsBackend whose clients talk to the fake at `api_endpoint`."""
    return {
        "BACKEND": "django_tasks_google.backends.CloudRunJobsBackend",
        "QUEUES": list(queues),
        "OPTIONS": {
            "project_id": PROJECT,
            "location": LOCATION,
            "base_url": "https://service-abc123-ew.a.run.app/tasks/",
            "oidc_service_account": f"service-invoker@{PROJECT}.iam.gserviceaccount.com",
            "api_endpoint": api_endpoint,
            "queue_aliases": queues,
            **options,
        },
    }


def use_jobs_backend(
    settings: Any, api_endpoint: str, alias: str = "default", queue: str = "default", **options: Any
) -> None:
    """Point TASKS[alias] (pytest-django's `settings` fixture) at CloudRunJobsBackend, `queue` → JOB."""
    caches["default"].clear()  # max_attempts is cached per alias, project, location and job
    settings.TASKS = {**settings.TASKS, alias: jobs_backend(api_endpoint, {queue: JOB_ID}, **options)}


def read_image(dockerfile: Path = DOCKERFILE) -> Image:
    """ENTRYPOINT and CMD of the last stage of a Dockerfile (later instructions win, as in Docker)."""
    entrypoint: list[str] = []
    cmd: list[str] = []
    for instruction, argument in _instructions(dockerfile.read_text()):
        if instruction == "FROM":  # a new stage inherits from its base image, never from a stage here
            entrypoint, cmd = [], []
        elif instruction == "ENTRYPOINT":
            entrypoint = _exec_form(argument)
        elif instruction == "CMD":
            cmd = _exec_form(argument)
    return Image(entrypoint, cmd)


def container_argv(image: Image, container: JobContainer) -> list[str]:
    """The process Cloud Run starts (Kubernetes rules): the job's command replaces ENTRYPOINT,
    args replace CMD, and CMD is dropped when the command is replaced."""
    executable = container.command or image.entrypoint
    arguments = container.args or ([] if container.command else image.cmd)
    return [*executable, *arguments]


def start_job_container(
    google_fake: GoogleServicesFake, execution: str | None = None, *, attempt: int = 0
) -> subprocess.Popen[str]:
    """Start attempt `attempt` (0-based) of task 0 of an execution (default: the fake's last one),
    as Cloud Run would. Output (stdout and stderr) is piped; the caller waits for the process."""
    container = google_fake.job_container(execution, attempt=attempt)
    return subprocess.Popen(
        container_argv(read_image(), container),
        cwd=PROJECT_ROOT,
        env=_container_env(container),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_job_container(
    google_fake: GoogleServicesFake, execution: str | None = None, *, attempt: int = 0
) -> subprocess.CompletedProcess[str]:
    """`start_job_container` and wait for it to exit; output in `.stdout`."""
    process = start_job_container(google_fake, execution, attempt=attempt)
    try:
        output, _ = process.communicate(timeout=CONTAINER_TIMEOUT)
    finally:
        process.kill()  # no-op once it exited; never leave a hung container behind
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def _container_env(container: JobContainer) -> dict[str, str]:
    return {
        **os.environ,
        # The image's ENV: the virtualenv first on PATH, so "python" is the project's interpreter.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        # What the deployment provides: the database and the settings (here: the test's TASKS).
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "tests.django_tasks_google.job_container_settings",
        "TEST_TASKS_JSON": json.dumps(settings.TASKS),
        # Last: Cloud Run's reserved CLOUD_RUN_* variables and the job's own env.
        **container.env,
    }


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs, comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        if full:
            instruction, _, argument = full.partition(" ")
            instructions.append((instruction.upper(), argument.strip()))
    return instructions


def _exec_form(argument: str) -> list[str]:
    """An instruction's command as argv: JSON exec form as is, shell form through /bin/sh -c."""
    if argument.startswith("["):
        value: Any = json.loads(argument)
        return [str(item) for item in value]
    return ["/bin/sh", "-c", argument] if argument else []
