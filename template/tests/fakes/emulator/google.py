"""The emulator assembled: one clock and one front end for the three behaving services."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.fakes.emulator.clock import EmulatorClock
from tests.fakes.emulator.cloud_run_jobs_runner import CloudRunJobsRunner, Launch
from tests.fakes.emulator.cloud_scheduler_pusher import CloudSchedulerPusher
from tests.fakes.emulator.cloud_tasks_dispatcher import CloudTasksDispatcher
from tests.fakes.emulator.front_end import FrontEnd
from tests.fakes.google_services import GoogleServicesFake


@dataclass
class GoogleEmulator:
    """Cloud Tasks dispatching and Cloud Scheduler firing start at once; Cloud Run Jobs once a
    test says how a container starts (``run_jobs``). ``stop()`` ends all three."""

    fake: GoogleServicesFake
    clock: EmulatorClock = field(default_factory=EmulatorClock)
    front_end: FrontEnd = field(default_factory=FrontEnd)

    def __post_init__(self) -> None:
        self.tasks = CloudTasksDispatcher(self.fake, self.clock, self.front_end).start()
        self.scheduler = CloudSchedulerPusher(self.fake, self.clock, self.front_end).start()
        self.jobs: CloudRunJobsRunner | None = None

    def run_jobs(self, launch: Launch, *, grace_seconds: float = 10.0) -> CloudRunJobsRunner:
        self.jobs = CloudRunJobsRunner(self.fake, self.clock, launch, grace_seconds).start()
        return self.jobs

    def stop(self) -> None:
        self.tasks.stop()
        self.scheduler.stop()
        if self.jobs is not None:
            self.jobs.stop()
