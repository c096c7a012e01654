"""The "Google behaves badly" harness: the service under gunicorn, the emulator, and the invariants.

The service runs production settings (``chaos_settings``: ``config.settings`` with short leases)
under real gunicorn as Cloud Run runs it, configured only by the environment a deployment sets,
plus the emulator's API endpoint and the test OIDC issuer's certificates URL (``DEPLOYMENT``,
tests/processes.py). The emulator's front end routes the service URL to it. Job containers and
``manage.py recover_tasks`` run with the same deployment environment, against the test database.

``Scenario.finish`` lets the platform settle, runs recovery passes until every execution is
terminal (or three passes did not help), then checks the invariants and records the scenario's
row in the session's table (tests/fakes/emulator/report.py):

* every execution ends terminal once recovery has run (``stuck``);
* the body never runs more often than the attempts allowed (``beyond_limit``);
* a task that succeeds runs exactly as often as planned (once, unless it was told to fail first)
  when nothing was killed;
* no 5xx but the deliberate retry answers (a 500 per planned failure), and never 429/503: Cloud
  Tasks throttles the whole queue on those.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.cache import caches
from django.db import connection, transaction
from django.tasks import TaskResult

from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import chaos_tasks
from tests.django_tasks_google.chaos_settings import FAST_LEASES, LEASE_SECONDS
from tests.django_tasks_google.cloud_run_job import container_argv, read_image
from tests.fakes.emulator.google import GoogleEmulator
from tests.fakes.emulator.report import ScenarioRow, record
from tests.fakes.google_services import JobContainer
from tests.processes import PROJECT_ROOT, WAIT_LIMIT, Deployment, deployed_tasks, wait_for

DEPLOYMENT = Deployment(
    project="chaos-project",
    region="europe-west1",
    service="chaos-service",
    settings_module="tests.django_tasks_google.chaos_settings",
)
TERMINAL = {"SUCCESSFUL", "FAILED"}


def service_tasks(env: dict[str, str]) -> dict[str, Any]:
    """TASKS as the service builds it from ``env`` (for enqueueing exactly as it is configured)."""
    tasks = deployed_tasks(env)
    for entry in tasks.values():
        entry["OPTIONS"].update(FAST_LEASES)
    return tasks


def container_launcher(env: dict[str, str]) -> Any:
    """How Cloud Run starts a job's task container here: the image's command, the service's env
    (the same deployment variables) and the container's own, in the project directory."""
    image = read_image()

    def launch(container: JobContainer) -> subprocess.Popen[str]:
        return subprocess.Popen(
            container_argv(image, container),
            cwd=PROJECT_ROOT,
            env={
                **env,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                **container.env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    return launch


def terminate_service_connections() -> int:
    """Drop every other connection to the test database (a database restart, as the service sees it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


@dataclass
class Scenario:
    """One scenario: what it enqueued, where its tasks log their runs, and the emulator it ran on."""

    name: str
    emulator: GoogleEmulator
    env: dict[str, str]
    directory: Path
    killed: bool = False  # an attempt was killed: its task may run once more than planned
    expect_failure: bool = False  # a FAILED end is right (e.g. a return value that cannot be stored)
    keys: dict[str, int] = field(default_factory=dict)  # run-log key → planned failing runs
    problems: list[str] = field(default_factory=list)  # scenario-specific findings (``expect``)
    ids: list[str] = field(default_factory=list)
    recoveries: list[str] = field(default_factory=list)  # each recovery pass's output

    def enqueue(
        self,
        key: str,
        *,
        fail_runs: int = 0,
        seconds: float = 0.0,
        nul: bool = False,
        jobs: bool = False,
        run_after: datetime.datetime | None = None,
    ) -> TaskResult:
        """Enqueue ``chaos_tasks.record`` in a committed transaction (the on-commit dispatch runs)."""
        task = chaos_tasks.record.using(backend="jobs", queue_name="batch") if jobs else chaos_tasks.record
        if run_after is not None:
            task = task.using(run_after=run_after)
        with transaction.atomic():
            result = task.enqueue(str(self.directory), key, seconds=seconds, fail_runs=fail_runs, nul=nul)
        self.keys[key] = fail_runs
        self.ids.append(result.id)
        return result

    def expect(self, condition: bool, problem: str) -> None:
        """A scenario-specific invariant: reported in the table and failed with the others."""
        if not condition:
            self.problems.append(problem)

    def runs(self, key: str) -> list[list[str]]:
        return chaos_tasks.runs(str(self.directory), key)

    def rows(self) -> list[TaskExecution]:
        """The scenario's executions: those it enqueued, and those a firing created for its keys."""
        rows = TaskExecution.objects.filter(module_path=f"{chaos_tasks.__name__}.record").order_by("pk")
        return [row for row in rows if str(row.pk) in self.ids or _key(row) in self.keys]

    def recover(self) -> str:
        """One pass of ``manage.py recover_tasks`` as the deployed recovery job runs it."""
        done = subprocess.run(
            [sys.executable, "manage.py", "recover_tasks", "--older-than", "0"],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=3 * WAIT_LIMIT,  # Django's start alone is slow on a loaded machine
            check=False,
        )
        return done.stdout + done.stderr

    def settle(self) -> None:
        """Wait until the platform has nothing in flight: every task delivered or given up, every
        execution's containers ended."""
        emulator = self.emulator
        wait_for(
            emulator.tasks.settled, timeout=3 * WAIT_LIMIT, message=f"{self.name}: Cloud Tasks to settle"
        )
        if emulator.jobs is not None:
            jobs = emulator.jobs
            wait_for(
                lambda: all(jobs.finished(name) for name in list(emulator.fake.executions)),
                timeout=3 * WAIT_LIMIT,  # a few container starts, slow on a loaded machine
                message=f"{self.name}: Cloud Run executions to end",
            )

    def finish(self, *, attempts_allowed: int) -> None:
        """Settle, recover until terminal (at most three passes), check the invariants, record."""
        self.settle()
        passes = 0
        while passes < 3 and any(row.status not in TERMINAL for row in self.rows()):
            time.sleep(LEASE_SECONDS + 0.5)  # let a dead attempt's lease lapse
            self.recoveries.append(self.recover())
            passes += 1
            self.settle()
        self.check(attempts_allowed=attempts_allowed)

    def check(self, *, attempts_allowed: int) -> None:
        rows = self.rows()
        stuck = sum(row.status not in TERMINAL for row in rows)
        runs = {key: self.runs(key) for key in self.keys}
        body_runs = sum(len(r) for r in runs.values())
        beyond = sum(max(0, len(r) - attempts_allowed) for r in runs.values())
        problems = list(self.problems)
        if stuck:
            problems.append(f"{stuck} not terminal after recovery")
        if beyond:
            problems.append(f"{beyond} runs beyond the limit of {attempts_allowed}")
        for key in self.keys:
            executions = [row for row in rows if _key(row) == key]
            if len(executions) != 1:
                problems.append(f"{key}: {len(executions)} executions, not 1")
                continue
            row, planned = executions[0], self.keys[key] + 1
            if row.status == "SUCCESSFUL" and not self.killed and len(runs[key]) != planned:
                problems.append(f"{key} succeeded after {len(runs[key])} runs, not {planned}")
            if row.status == "FAILED" and planned <= attempts_allowed and not self.expect_failure:
                problems.append(f"{key} FAILED though its attempts allowed it to succeed (lost)")
        statuses = [a.status for a in self.emulator.tasks.attempts() if a.status is not None]
        throttling = [s for s in statuses if s in (429, 503)]
        deliberate = sum(run[2] == "fail" for r in runs.values() for run in r)
        if throttling:
            problems.append(f"answered {throttling.count(429)}x 429 and {throttling.count(503)}x 503")
        if statuses.count(500) > deliberate:
            problems.append(f"{statuses.count(500)} answers 500 for {deliberate} planned failures")
        others = sorted({s for s in statuses if s >= 500 and s not in (500, 503)})
        if others:
            problems.append(f"answered {others}")
        deliveries = len(self.emulator.tasks.attempts())
        deliveries += len(self.emulator.scheduler.firings())
        if self.emulator.jobs is not None:
            deliveries += len(self.emulator.jobs.attempts())
        record(
            ScenarioRow(
                scenario=self.name,
                deliveries=deliveries,
                body_runs=body_runs,
                final_states=",".join(row.status for row in rows),
                stuck=stuck,
                beyond_limit=beyond,
                verdict="; ".join(problems) or "ok",
            )
        )
        recoveries = "".join(f"\n--- recover_tasks ---\n{output}" for output in self.recoveries)
        assert not problems, f"{self.name}: {'; '.join(problems)}{recoveries}"


def _key(row: TaskExecution) -> str:
    """The run-log key a ``chaos_tasks.record`` execution was given (positional or keyword)."""
    return str(row.kwargs.get("key") or (row.args[1] if len(row.args) > 1 else ""))


def prepare(settings: Any, env: dict[str, str]) -> dict[str, Any]:
    """Make the test process enqueue as the service would: its TASKS, and its SECRET_KEY (pushes
    carry a MAC keyed from it); forget cached lookups."""
    caches["default"].clear()
    tasks = service_tasks(env)
    settings.TASKS = tasks
    settings.SECRET_KEY = env["DJANGO_SECRET_KEY"]
    return tasks
