"""Slow tier: a new user follows the generated README's quick start, command by command.

The commands are taken verbatim from the README's `sh` blocks under "Quick start" and "The site and
the worker, side by side", and run in order in a freshly rendered project. What differs from a
user's machine, and only that: the PostgreSQL server is the tests' (`postgres_url`) instead of the
compose file's (there is no Docker engine here), so the database lines (`docker compose`,
`createdb`) are replaced by creating the database and setting DATABASE_URL; `createsuperuser` gets
`--noinput` and its answers from DJANGO_SUPERUSER_*; `runserver` gets a free port; the two commands
meant for their own terminals (`run_tasks`, `runserver`) run in the background.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import pytest

from .conftest import UV, VARIANTS, Render, _free_port, database_url, project_env, run, uv

pytestmark = pytest.mark.slow

SECTIONS = ["## Quick start", "## The site and the worker, side by side"]
DATABASE_LINES = ("docker compose ", "createdb ")
BACKGROUND = ("run_tasks", "runserver")
# Upper bound for anything the test waits for; reaching it means the test failed.
WAIT_LIMIT = 180.0


def readme_commands(readme: str) -> list[str]:
    """The shell lines of the `sh` blocks in SECTIONS, in order (comment-only lines dropped)."""
    commands: list[str] = []
    for heading in SECTIONS:
        section = readme[readme.index(heading) + len(heading) :]
        section = section[: section.index("\n## ")] if "\n## " in section else section
        for block in re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL):
            commands += [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return commands


def test_readme_commands_are_extracted() -> None:
    readme = "## Quick start\n```sh\n# note\nuv run a   # x\n```\n## The site and the worker, side by side\n"
    readme += "```sh\nuv run b\n```\n```python\nnot_shell()\n```\n## Other\n```sh\nuv run c\n```\n"
    assert readme_commands(readme) == ["uv run a   # x", "uv run b"]


@contextmanager
def background(command: str, cwd: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A command in its own process group, stopped with SIGTERM (then SIGKILL) on leaving."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(condition: Callable[[], bool], what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not condition():
        if time.monotonic() > deadline:
            output = "\n".join(f"--- {log.name} ---\n{log.read_text(errors='replace')}" for log in logs)
            raise AssertionError(f"gave up waiting for {what}\n{output}")
        time.sleep(1)


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@pytest.mark.parametrize("variant", ["sqlite-tasks", "postgres-all"])
def test_following_the_quick_start_reaches_a_finished_task_and_the_admin(
    variant: str, render: Render, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    project = render(tmp_path / "service", **VARIANTS[variant])
    uv(project, "lock")
    readme = (project / "README.md").read_text()
    commands = readme_commands(readme)
    assert any("demo_tasks" in command for command in commands), commands

    bin_dir = tmp_path / "bin"  # `uv` as the README writes it: the tests' uv (see conftest.UV)
    bin_dir.mkdir()
    (bin_dir / "uv").symlink_to(UV)
    extra = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
        "DJANGO_SUPERUSER_PASSWORD": "a-long-local-password",
        "PYTHONUNBUFFERED": "1",
    }
    if VARIANTS[variant]["database"] == "postgres":
        assert any(command.startswith("docker compose up") for command in commands)
        server = request.getfixturevalue("postgres_url")
        extra["DATABASE_URL"] = database_url(server, f"quickstart_{os.getpid()}")
    env = project_env(extra)
    port = _free_port()
    logs: list[Path] = []
    with ExitStack() as stack:
        for command in commands:
            if command.startswith(DATABASE_LINES):
                if command.startswith("docker compose up") and "DATABASE_URL" in extra:
                    create_database(project, env, extra["DATABASE_URL"], stack)
                continue
            if "manage.py createsuperuser" in command:
                command = command.replace("createsuperuser", "createsuperuser --noinput", 1)
            if "manage.py runserver" in command:
                command = command.replace("runserver", f"runserver 127.0.0.1:{port}", 1)
            if any(f"manage.py {name}" in command for name in BACKGROUND):
                log = tmp_path / f"{len(logs)}-{command.split('manage.py ')[1].split()[0]}.log"
                logs.append(log)
                stack.enter_context(background(command, project, env, log))
                continue
            completed = run(["bash", "-c", command], project, env=env, timeout=900)
            if "manage.py demo_tasks" in command:
                assert "All sample tasks behaved as expected." in completed.stdout
            if "send_notification.enqueue" in command:
                task_id = int(completed.stdout.strip().splitlines()[-1])
                finished = partial(task_finished, project, env, task_id)
                wait_for(finished, f"task {task_id} to succeed on the README's worker", logs)

        login = f"http://127.0.0.1:{port}/admin/login/"
        wait_for(lambda: http_status(login) is not None, "runserver", logs)
        assert http_status(login) == 200


def task_finished(project: Path, env: dict[str, str], task_id: int) -> bool:
    code = (
        "from django_tasks_google.models import TaskExecution; "
        f"print(TaskExecution.objects.get(pk={task_id}).status)"
    )
    output = run([UV, "run", "python", "manage.py", "shell", "-c", code], project, env=env).stdout
    status = output.strip().splitlines()[-1]  # (after Django's "N objects imported automatically")
    assert status in {"READY", "RUNNING", "SUCCESSFUL"}, f"task {task_id} is {status}"
    return status == "SUCCESSFUL"


def create_database(project: Path, env: dict[str, str], url: str, stack: ExitStack) -> None:
    """What `docker compose up -d --wait db` gives a user: an empty database at DATABASE_URL."""
    server, _, name = url.rpartition("/")
    sql = (
        "import psycopg, sys; "
        "connection = psycopg.connect(sys.argv[1] + '/postgres', autocommit=True); "
        "connection.execute(f'DROP DATABASE IF EXISTS {sys.argv[2]}'); "
        "connection.execute(f'CREATE DATABASE {sys.argv[2]}')"
    )
    run([UV, "run", "python", "-c", sql, server, name], project, env=env)
    stack.callback(drop_database, project, env, server, name)


def drop_database(project: Path, env: dict[str, str], server: str, name: str) -> None:
    code = (
        "import psycopg, sys; "
        "psycopg.connect(sys.argv[1] + '/postgres', autocommit=True)"
        ".execute(f'DROP DATABASE IF EXISTS {sys.argv[2]} WITH (FORCE)')"
    )
    subprocess.run([str(UV), "run", "python", "-c", code, server, name], cwd=project, env=env, check=False)
