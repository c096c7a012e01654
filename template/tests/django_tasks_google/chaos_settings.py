"""Settings of the service under test in the "Google behaves badly" suite.

Production settings (``config.settings``, driven by the environment a Cloud Run deployment sets)
with one change: short leases (heartbeat every 0.5 s, lapsed after 5 s), so a killed attempt's
lease expires within the scenario instead of after the default 30 s, while ten missed heartbeats
in a row (a loaded test machine) are still needed to lose a live lease.
"""

from config.settings import *  # noqa: F403
from config.settings import TASKS

FAST_LEASES = {"heartbeat_interval_seconds": 0.5, "heartbeat_timeout_seconds": 5}
LEASE_SECONDS = 5

for _entry in TASKS.values():
    _entry["OPTIONS"].update(FAST_LEASES)
