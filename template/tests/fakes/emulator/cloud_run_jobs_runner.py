"""Cloud Run Jobs' runner: every execution's tasks run as real container processes.

What it models (https://cloud.google.com/run/docs/container-contract#jobs-env-vars,
https://cloud.google.com/run/docs/configuring/task-timeout,
https://cloud.google.com/run/docs/configuring/max-retries,
https://cloud.google.com/run/docs/container-contract#lifecycle):

* One process per task index, started by ``launch(container)`` with the env Cloud Run gives it:
  the container's env plus ``CLOUD_RUN_JOB``, ``CLOUD_RUN_EXECUTION``, ``CLOUD_RUN_TASK_INDEX``,
  ``CLOUD_RUN_TASK_ATTEMPT`` (0 on the first attempt) and ``CLOUD_RUN_TASK_COUNT``.
* Exit 0 is success; any other exit (a crash, ``kill -9``) fails the attempt, and the task is
  retried up to ``max_retries`` times (template default 3).
* The task timeout is per attempt: when it passes, the container gets SIGTERM, then SIGKILL after
  the grace period (Cloud Run: 10 s; ``grace_seconds`` here, not compressed), and the attempt
  failed. ``CancelExecution`` does the same to the running attempts and stops retrying.
* Once every task ended the execution completes (succeeded = every task succeeded) and its RunJob
  long-running operation resolves; a cancelled execution was completed by the fake already.

Task timeouts are compressed by the clock. Not modelled: parallelism limits, SIGTSTP/SIGCONT of
maintenance migrations.
"""

from __future__ import annotations

import datetime
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tests.fakes.cloud_run import CloudRunFake
from tests.fakes.emulator.clock import EmulatorClock
from tests.fakes.grpc_server import short
from tests.fakes.push import JobContainer

Launch = Callable[[JobContainer], "subprocess.Popen[str]"]


@dataclass
class ContainerAttempt:
    """One attempt of one task of an execution (the audit log)."""

    execution: str  # short execution id
    task_index: int
    attempt: int  # CLOUD_RUN_TASK_ATTEMPT
    process: subprocess.Popen[str]
    returncode: int | None = None
    output: str = ""
    reason: str = ""  # "", "timeout" or "cancelled"


@dataclass
class CloudRunJobsRunner:
    """Subscribes to the fake's ``execution_created``/``execution_cancelled`` and runs containers."""

    fake: CloudRunFake
    clock: EmulatorClock
    launch: Launch
    grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        self.audit: list[ContainerAttempt] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._cancelled: set[str] = set()
        self._done: set[str] = set()
        self._expired: set[int] = set()  # ids of attempts whose task timeout a test made pass now

    def start(self) -> CloudRunJobsRunner:
        self.fake.on("execution_created", self._created)
        self.fake.on("execution_cancelled", self._cancel)
        return self

    def stop(self) -> None:
        """Kill what still runs (test teardown) and wait for the task threads."""
        with self._lock:
            running = [a.process for a in self.audit if a.process.poll() is None]
            self._cancelled.update(a.execution for a in self.audit)
        for process in running:
            process.kill()
        for thread in self._threads:
            thread.join()

    # --- test API --------------------------------------------------------------------------

    def attempts(self, execution: str | None = None) -> list[ContainerAttempt]:
        with self._lock:
            return [a for a in self.audit if execution is None or a.execution == short(execution)]

    def running(self, execution: str | None = None) -> list[ContainerAttempt]:
        return [a for a in self.attempts(execution) if a.process.poll() is None]

    def time_out(self, execution: str) -> None:
        """Let the task timeout of the execution's running attempts pass now (a clock jump for
        them alone): they get SIGTERM, then SIGKILL after the grace, as at a real timeout."""
        with self._lock:
            self._expired.update(id(a) for a in self.audit if a.execution == short(execution))

    def finished(self, execution: str) -> bool:
        with self._lock:
            return short(execution) in self._done

    # --- events from the fake ----------------------------------------------------------------

    def _created(self, name: str) -> None:
        with self.fake._lock:
            execution = self.fake.executions[name]
            task_count = execution.task_count
            template = execution.template
            retries = template.max_retries if "max_retries" in template else 3
            timeout = template.timeout if "timeout" in template else datetime.timedelta(minutes=10)
        results: list[bool] = [False] * task_count
        threads = [
            threading.Thread(
                target=self._run_task, args=(name, index, retries, timeout, results), name=f"job-task-{index}"
            )
            for index in range(task_count)
        ]
        closer = threading.Thread(target=self._complete, args=(name, threads, results), name="job-complete")
        with self._lock:
            self._threads.extend([*threads, closer])
        for thread in threads:
            thread.start()
        closer.start()

    def _cancel(self, name: str) -> None:
        with self._lock:
            self._cancelled.add(short(name))
            running = [a for a in self.audit if a.execution == short(name) and a.process.poll() is None]
        for attempt in running:
            attempt.reason = "cancelled"
            threading.Thread(target=self._terminate, args=(attempt.process,), daemon=True).start()

    # --- running -----------------------------------------------------------------------------

    def _run_task(
        self, name: str, index: int, retries: int, timeout: datetime.timedelta, results: list[bool]
    ) -> None:
        for number in range(retries + 1):
            with self._lock:
                if short(name) in self._cancelled:
                    return
                process = self.launch(self.fake.job_container(name, task_index=index, attempt=number))
                attempt = ContainerAttempt(short(name), index, number, process)
                self.audit.append(attempt)
            output = self._wait(process, attempt, timeout)
            attempt.output, attempt.returncode = output, process.returncode
            if process.returncode == 0:
                results[index] = True
                return

    def _wait(
        self, process: subprocess.Popen[str], attempt: ContainerAttempt, timeout: datetime.timedelta
    ) -> str:
        """The container's output once it exited; at the task timeout (on the clock, or made to pass
        by ``time_out``) SIGTERM, then SIGKILL after the grace."""
        started = self.clock.monotonic()
        while True:
            try:
                output, _ = process.communicate(timeout=0.05)
                return output or ""
            except subprocess.TimeoutExpired:
                expired = id(attempt) in self._expired
                if expired or self.clock.monotonic() - started >= self.clock.real_seconds(timeout):
                    attempt.reason = "timeout"
                    self._terminate(process)
                    output, _ = process.communicate()
                    return output or ""

    def _terminate(self, process: subprocess.Popen[str]) -> None:
        """SIGTERM, then SIGKILL once the grace period has passed."""
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()

    def _complete(self, name: str, threads: list[threading.Thread], results: list[bool]) -> None:
        for thread in threads:
            thread.join()
        with self._lock:
            cancelled = short(name) in self._cancelled
        if not cancelled:
            self.fake.complete_execution(name, failed_tasks=results.count(False))
        with self._lock:
            self._done.add(short(name))
