"""Shared pytest configuration: real components are started by the plugins in tests/infra/."""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.infra.components",
]

# Generated (property-based) tests: a fixed seed, so a CI run is reproducible and a failure
# seen once is seen again; no per-example deadline (a loaded 2-core machine is slow, and timing
# is measured in benchmarks/, not asserted in tests). MLSERVE_HYPOTHESIS=explore draws new cases.
settings.register_profile("mlserve", derandomize=True, deadline=None, print_blob=True,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, max_examples=2000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("explore" if os.environ.get("MLSERVE_HYPOTHESIS") == "explore" else "mlserve")
