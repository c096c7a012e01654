"""Who runs an attempt: the worker identity recorded in `worker_ids`, one entry per attempt.

Django's contract has `TaskResult.worker_ids` name the workers that ran a task; the lease id that
proves an attempt's ownership is a different thing and stays in the `lease_worker_id` column.
On Cloud Run the environment names the instance's job execution and task, or the service
revision (https://docs.cloud.google.com/run/docs/container-contract, "Environment variables");
the host name and process id tell the processes of one machine apart.
"""

import os
import socket
from functools import cache


@cache
def _platform() -> str:
    execution = os.environ.get("CLOUD_RUN_EXECUTION")
    if execution:
        return f"{execution}/task-{os.environ.get('CLOUD_RUN_TASK_INDEX', '0')}/"
    revision = os.environ.get("K_REVISION")
    return f"{revision}/" if revision else ""


@cache
def _host() -> str:
    return socket.gethostname()


def worker_identity() -> str:
    """E.g. `my-job-x7k2p/task-0/host:42` (Cloud Run Jobs), `my-service-00007-abc/host:42`, `host:42`."""
    # The process id is read each time: a forked worker child is another process.
    return f"{_platform()}{_host()}:{os.getpid()}"
