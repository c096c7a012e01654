"""How many children, how often, how long: the local worker's settings, from its flags and backends.

`run_tasks` flags win; otherwise each value comes from the ProcessBackend aliases the worker
serves, the most generous one (the strictest for recycling children), so one worker can serve
several aliases with one pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backends.process import ProcessBackend


@dataclass
class WorkerSettings:
    max_workers: int
    poll_interval: float
    batch_size: int
    shutdown_timeout: float
    kill_grace: float
    recycle_after: int
    max_child_rss_mb: float | None
    # Seconds without an attempt after which a child exits (None: children stay).
    idle_child_seconds: float | None

    @classmethod
    def from_backends(
        cls,
        backends: list[ProcessBackend],
        *,
        max_workers: int | None = None,
        poll_interval: float | None = None,
        batch_size: int | None = None,
        recycle_after: int | None = None,
        max_child_rss_mb: float | None = None,
        idle_child_seconds: float | None = None,
    ) -> WorkerSettings:
        """Command-line values win; otherwise the most generous value among the served backends
        (the strictest for recycling children)."""
        rss_limits = [b.config.worker_max_child_rss_mb for b in backends if b.config.worker_max_child_rss_mb]
        if idle_child_seconds is None:
            # The longest idle period; 0 (children stay) is longer than any.
            idle_limits = [b.config.worker_idle_child_seconds for b in backends]
            idle_child_seconds = max(idle_limits) if all(idle_limits) else 0
        return cls(
            max_workers=max_workers or max(b.max_workers for b in backends),
            poll_interval=poll_interval or min(b.poll_interval for b in backends),
            batch_size=batch_size or max(b.batch_size for b in backends),
            shutdown_timeout=max(b.shutdown_timeout for b in backends),
            kill_grace=max(b.kill_grace for b in backends),
            recycle_after=recycle_after or min(b.config.worker_recycle_after for b in backends),
            max_child_rss_mb=max_child_rss_mb or (min(rss_limits) if rss_limits else None),
            idle_child_seconds=idle_child_seconds or None,
        )
