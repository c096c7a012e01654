"""Settings of the service under test in the "Google behaves badly" suite.

Production settings (``config.settings``, driven by the environment a Cloud Run deployment sets)
with one change: short leases (heartbeat every 0.2 s, lapsed after 2 s), so a killed attempt's
lease expires within the scenario instead of after the default 30 s.
"""

from config.settings import *  # noqa: F403
from config.settings import TASKS

FAST_LEASES = {"heartbeat_interval_seconds": 0.2, "heartbeat_timeout_seconds": 2}
LEASE_SECONDS = 2

for _entry in TASKS.values():
    _entry["OPTIONS"].update(FAST_LEASES)
