"""Settings of an emulated Cloud Run job container in tests (see tests/django_tasks_google/cloud_run_job.py).

The test settings, with the TASKS the running test configured (JSON in TEST_TASKS_JSON): the
container must know the backend alias the test enqueued to, with the same OPTIONS.
"""

import json
import os

from config.test_settings import *  # noqa: F403

TASKS = json.loads(os.environ["TEST_TASKS_JSON"])
