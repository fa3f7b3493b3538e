"""The labelled traffic simulator: a realistic Istio mesh's Envoy logs and spans, with attacks.

`simulate(SimulationConfig(...))` builds a seeded mesh (`topology`), applies a scenario's
attacks and benign look-alikes (`scenarios`), generates diurnal benign traffic (`traffic`) and
renders the same calls as Envoy JSON/TEXT access logs (`render_envoy`) and OTLP spans made by the
real OpenTelemetry SDK (`render_otlp`), plus labels.json and mesh.json (`writer`).

It is part of the core package and never imports `ingest`, `detectors` or `alerts`: it produces
what those read, the way a real mesh would.
"""

from meshwatch.simulate.engine import DEFAULT_RPS, SimulationConfig, Summary, simulate
from meshwatch.simulate.scenarios import SCENARIOS
from meshwatch.simulate.writer import FORMAT_FILES, FORMATS

__all__ = ["DEFAULT_RPS", "FORMATS", "FORMAT_FILES", "SCENARIOS", "SimulationConfig", "Summary",
           "simulate"]
