"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"


def _find_shared_data() -> Path | None:
    # ../shared/data beside the checkout (the documented place), else the workplace copy.
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if (candidate / "nab").is_dir():
            return candidate
    return None


SHARED_DATA = _find_shared_data()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only third-party reference data (NAB, OTLP examples, Istio lines)."""
    if SHARED_DATA is None:
        pytest.fail("reference data missing: expected ../shared/data beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Small third-party samples copied into the repo (see tests/data/README.md)."""
    return TEST_DATA


@pytest.fixture
def kafka_broker(tmp_path):
    """A fresh in-memory Kafka-protocol broker (Tansu) for one test."""
    from meshwatch.devbroker import tansu_broker

    with tansu_broker(tmp_path) as broker:
        yield broker
