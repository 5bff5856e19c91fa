"""pytest fixtures for clustersim: ``clustersim`` and ``clustersim_factory``.

Register with ``pytest_plugins = ["clustersim.pytest_plugin"]`` in the top-level conftest.
"""

import os
from collections.abc import Callable, Iterator

import pytest

from clustersim.registry import AWS_ENV
from clustersim.sim import ClusterSim


@pytest.fixture
def clustersim_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ClusterSim]]:
    """Return a function that builds and starts a ClusterSim; every one is stopped afterwards.

    It takes ClusterSim's arguments (default: preset small, seed 0, stepped clock). Sims after
    the first get their own repository name, since moto's data is shared in one process. It
    also gives boto3 dummy AWS credentials where the environment has none.
    """
    for name, value in AWS_ENV.items():
        if name not in os.environ:
            monkeypatch.setenv(name, value)
    sims: list[ClusterSim] = []

    def build(**options) -> ClusterSim:
        options.setdefault("preset", "small")
        if sims:
            options.setdefault("repository", f"gpu-dev-{len(sims)}")
        sim = ClusterSim(**options)
        sims.append(sim)
        return sim.start()

    yield build
    for sim in reversed(sims):
        sim.stop()


@pytest.fixture
def clustersim(clustersim_factory: Callable[..., ClusterSim]) -> ClusterSim:
    """Return a started ClusterSim: preset small, seed 0, a clock stepped by the test."""
    return clustersim_factory()
