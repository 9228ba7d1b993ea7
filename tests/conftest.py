"""Shared test configuration.

Hypothesis runs without deadlines (the Triton interpreter's speed varies) and,
under CI, derandomized so a red build can be reproduced from its log.
"""

import os

# refute.kernels chooses Triton's interpreter (no GPU here) and must do so before
# anything imports triton: Triton's own jit helpers are defined at its import.
import refute.kernels  # noqa: F401  (imported for that side effect, first)
from hypothesis import HealthCheck, settings

settings.register_profile(
    "refute",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=bool(os.environ.get("CI")),
    print_blob=True,
)
settings.load_profile("refute")


def pytest_collection_modifyitems(config, items):
    """Files holding slow tests run first. Under xdist's ``--dist loadfile`` the
    longest files then start early, instead of one of them finishing the run
    alone on one worker while the other idles. The sort is stable, so each
    file's own order is kept."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
