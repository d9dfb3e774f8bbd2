"""Shared fixtures. Ray tests share one local Ray for the whole session (starting Ray costs
seconds on a 2-core CI machine), with a metrics export port the metrics test scrapes."""
import os
import socket

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray (2 CPUs, no dashboard UI) shared by every test marked `ray`."""
    ray = pytest.importorskip("ray")
    os.environ.pop("RAY_ADDRESS", None)
    port = _free_port()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, _metrics_export_port=port, logging_level="WARNING",
                 log_to_driver=False)
    yield {"metrics_port": port}
    ray.shutdown()


@pytest.fixture(autouse=True, scope="module")
def release_kept_actors():
    """A module's runs may leave their actors to its next run (tests/helpers.py: SMALL_RUN); the
    next module's tests find the session's CPUs free."""
    yield
    import sys
    if "qgm_ray.engine.crew" in sys.modules:
        sys.modules["qgm_ray.engine.crew"].release()



def pytest_collection_modifyitems(session, config, items):
    """The files with `long` tests first, then those with the most slow (then Ray) tests (a stable
    sort: the order inside a file is kept). `make test` runs `pytest -n 2 --dist worksteal`: each
    worker starts on its half, and one that runs out takes the end of the other's queue; a test
    of minutes that started last would leave one worker running it alone at the end."""
    heavy: dict = {}
    for item in items:
        weight = (1000 * (item.get_closest_marker("long") is not None) + 10 * (item.get_closest_marker("slow") is not None)
                  + (item.get_closest_marker("ray") is not None))
        heavy[item.path] = heavy.get(item.path, 0) + weight
    items.sort(key=lambda item: -heavy.get(item.path, 0))
