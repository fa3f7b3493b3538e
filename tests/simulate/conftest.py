"""Simulations shared by the simulate tests: one full mixed run, small runs per scenario."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.simulate.helpers import Run, run_sim


@pytest.fixture(scope="session")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """40 simulated minutes, 14 services, every format, the mixed scenario."""
    return run_sim(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="session")
def scenario_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Run]:
    """A 30-minute envoy-json run of one scenario (cached per scenario)."""
    cache: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in cache:
            cache[name] = run_sim(tmp_path_factory.mktemp(name), scenario=name,
                                  duration_s=1800, services=12, rps=2.0,
                                  formats=("envoy-json",))
        return cache[name]

    return get
