"""Joining or starting Ray: under `ray job submit` (RAY_ADDRESS set) or with `ray.address`, the
existing cluster; otherwise a local Ray sized by `ray.num_cpus`."""

from __future__ import annotations

import os

from reki_spark import console
from reki_spark.config import RayConfig


def start_ray(settings: RayConfig) -> None:
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        # Workers' own output reaches the console only in verbose runs.
        quiet = {"logging_level": "WARNING", "log_to_driver": console.verbose()}
        with console.without_stderr_line(console.RAY_LOG_LEVEL_NOTICE):
            if settings.address is not None or "RAY_ADDRESS" in os.environ:
                ray.init(address=settings.address, **quiet)
            else:
                # "local" always starts a private Ray, never one left behind by `ray start` on this host.
                ray.init(address="local", num_cpus=settings.num_cpus, include_dashboard=False, **quiet)
    # The stages print their own progress (per prompt / per text) instead of Ray Data's bars.
    DataContext.get_current().enable_progress_bars = False
    console.quiet_ray_data()
