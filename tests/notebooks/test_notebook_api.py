"""The notebook API on a real store: a short labelled simulation run through the real pipeline
(`build_store`), read back with the loaders, and replayed store-less through detector configs.

One embedded store per module (chdb serves one directory per process): it is opened once for
the loaders and stays open while replays run, which is the situation replays are built for.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

import meshwatch.notebook as mw
from alerts.feedback import FeedbackStore
from meshwatch.graphs.timerange import RangeError
from meshwatch.records import EDGE_EVENT_FIELDS
from meshwatch.settings import ConfigError


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    return mw.simulate_traffic(tmp_path_factory.mktemp("sim"), duration="2h", rps=2.0,
                               services=12, seed=3)


@pytest.fixture(scope="module")
def built(sim, tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("store") / "data"
    stats = mw.build_store(sim, path)
    return path, stats


@pytest.fixture(scope="module")
def store(built):
    opened = mw.open_store(built[0])
    try:
        yield opened.store
    finally:
        opened.close()


@pytest.fixture(scope="module")
def inputs(sim) -> mw.ReplayInputs:
    return mw.prepare(sim)


def one(store, sql: str) -> int:
    return int(store.query(sql + " SETTINGS output_format_json_quote_64bit_integers = 0")[0]["n"])


def test_build_store_runs_the_pipeline_over_the_simulated_files(sim, built):
    labels = json.loads((sim / "labels.json").read_text())
    _, stats = built
    assert stats["records"] == labels["counts"]["envoy_records"]
    assert stats["events"] == stats["records"] and stats["parse_failures"] == 0
    assert sum(stats["alerts_opened"].values()) > 0


def test_load_windows_sums_parts_once_per_window_and_edge(store):
    windows = mw.load_windows()
    assert len(windows) == one(store, "SELECT uniqExact(window_start, edge_src, edge_dst) AS n "
                                      "FROM {db}.edge_windows")
    assert windows["requests"].sum() == one(store, "SELECT sum(requests) AS n "
                                                   "FROM {db}.edge_windows FINAL")
    assert not windows.duplicated(["window_start", "edge_src", "edge_dst"]).any()
    assert str(windows["window_start"].dt.tz) == "UTC"
    share = windows["mtls_share"].dropna()
    assert ((share >= 0) & (share <= 1)).all() and share.lt(1).any()  # the simulated downgrade


def test_load_windows_filters_time_and_namespace(store):
    everything = mw.load_windows()
    first = everything["window_start"].min()
    half = mw.load_windows(since=first, until=first + pd.Timedelta("30min"))
    assert 0 < len(half) < len(everything)
    assert half["window_start"].max() < first + pd.Timedelta("30min")
    legacy = mw.load_windows(namespace="legacy")
    assert 0 < len(legacy) < len(everything)
    assert ((legacy["src_namespace"] == "legacy") | (legacy["dst_namespace"] == "legacy")).all()
    with pytest.raises(RangeError, match="empty time range"):
        mw.load_windows(since="latest")  # from the end of the newest window to that end


def test_load_events_returns_the_edge_event_contract(store):
    events = mw.load_events()
    assert len(events) == one(store, "SELECT count() AS n FROM {db}.edge_events FINAL")
    assert set(EDGE_EVENT_FIELDS) <= set(events.columns)
    assert events["ts"].is_monotonic_increasing
    assert events["mtls"].dropna().isin([True, False]).all()
    # Only the destination side knows about the caller's certificate.
    assert events.loc[events["reporter"] == "source", "mtls"].isna().all()
    assert len(mw.load_events(limit=10)) == 10
    legacy = mw.load_events(namespace="legacy")
    assert 0 < len(legacy) < len(events)
    assert ((legacy["source_namespace"] == "legacy")
            | (legacy["destination_namespace"] == "legacy")).all()


def test_load_graph_and_coverage_agree_with_the_windows(store):
    windows = mw.load_windows()
    end = windows["window_start"].max() + pd.Timedelta(seconds=int(windows["window_seconds"].max()))
    graph = mw.load_graph(at="latest", window="30m")
    recent = windows[windows["window_start"] >= end - pd.Timedelta("30min")]
    assert graph.totals["requests"] == recent["requests"].sum()
    assert len(graph.edges) == len(recent.groupby(["edge_src", "edge_dst"]))
    g = graph.to_networkx()
    assert g.number_of_edges() == len(graph.edges) and g.number_of_nodes() == len(graph.nodes)
    coverage = mw.load_coverage(bucket="30m")
    assert coverage["requests"].sum() == windows["requests"].sum()
    assert coverage["start"].nunique() == 4  # 2 hours in 30-minute buckets
    assert coverage["edge_share"].dropna().between(0, 1).all()
    assert (coverage.loc[coverage["namespace"] == "legacy", "request_share"] < 1).any()


def test_load_edges_dates_every_edge_once(store, sim):
    edges = mw.load_edges()
    assert len(edges) == one(store, "SELECT uniqExact(edge_src, edge_dst) AS n "
                                    "FROM {db}.edge_windows")
    assert (edges["first_seen"] <= edges["last_seen"]).all()
    labels = json.loads((sim / "labels.json").read_text())
    scan = next(a for a in labels["attacks"] if a["kind"] == "service_scan")
    probed = edges[edges["edge_src"].str.contains(scan["source"]["workload"])]
    # The scan's probes are edges nobody had used before the attack.
    assert (probed["first_seen"] >= pd.Timestamp(scan["start"])).any()


def test_load_alerts_carries_analyst_verdicts_as_labels(store, inputs):
    before = mw.load_alerts()
    assert before["label"].isna().all() and len(before) > 2
    alerts = {a.id: a for a in store.list_alerts(limit=100)}
    ranked = before.sort_values("score", ascending=False)["id"].tolist()
    feedback = FeedbackStore(store)
    feedback.record_verdict(alerts[ranked[0]], "true_positive", "ana", "real attack", None)
    feedback.record_verdict(alerts[ranked[-1]], "false_positive", "ana", "noise", None)
    after = mw.load_alerts().set_index("id")
    assert after.loc[ranked[0], "label"] == True  # noqa: E712 - pandas' boolean
    assert after.loc[ranked[0], "verdict"] == "true_positive"
    assert after.loc[ranked[-1], "label"] == False  # noqa: E712
    assert after["label"].isna().sum() == len(after) - 2
    assert isinstance(after.loc[ranked[0], "source"], dict)
    curve = mw.feedback_curve(after.reset_index())
    assert curve["recall"].iloc[-1] == 1.0 and curve["alerts"].iloc[-1] == 2
    assert mw.feedback_average_precision(after.reset_index()) == 1.0
    only = mw.load_alerts(detector=after.loc[ranked[0], "detector"])
    assert set(only["detector"]) == {after.loc[ranked[0], "detector"]}
    # A replay's alerts inherit the verdicts of the stored alerts with the same fingerprint.
    judged = mw.label_by_feedback(mw.replay(inputs).alerts, mw.load_alerts())
    by_fp = judged.set_index("fingerprint")
    assert by_fp.loc[after.loc[ranked[0], "fingerprint"], "verdict"] == "true_positive"
    assert by_fp.loc[after.loc[ranked[-1], "fingerprint"], "verdict"] == "false_positive"
    assert judged["verdict"].notna().sum() == 2


def test_replay_of_files_reproduces_the_pipeline_alerts(store, inputs):
    stored = mw.load_alerts(with_feedback=False)
    result = mw.replay(inputs)
    replayed = result.alerts
    assert sorted(replayed["fingerprint"]) == sorted(stored["fingerprint"])
    counts = stored.set_index("fingerprint")["count"]
    assert (replayed.set_index("fingerprint")["count"] == counts.loc[replayed["fingerprint"]]
            .to_numpy()).all()


def test_replay_of_stored_events_finds_the_same_alerts_without_writing(store):
    tables = {t: one(store, f"SELECT count() AS n FROM {{db}}.{t}")
              for t in ("alerts", "checkpoints", "edge_windows", "edge_events")}
    result = mw.replay(store)
    assert sorted(result.alerts["fingerprint"]) == sorted(mw.load_alerts()["fingerprint"])
    assert {t: one(store, f"SELECT count() AS n FROM {{db}}.{t}") for t in tables} == tables
    from_frame = mw.replay(mw.load_events(), only=["plaintext_edge"])
    assert set(from_frame.alerts["detector"]) == {"plaintext_edge"}


def test_replay_returns_scores_findings_and_rethresholds(inputs):
    result = mw.replay(inputs, only=["first_seen_edge"], score_floor=0.05)
    assert result.detectors == ["first_seen_edge"]
    assert result.thresholds == {"first_seen_edge": 0.5}
    scores = result.scores
    assert (scores["score"] > 0).all() and set(scores["detector"]) == {"first_seen_edge"}
    findings = result.findings
    assert findings["score"].min() >= 0.05
    assert findings["alerting"].equals(findings["score"] >= 0.5)
    # The floor only adds findings below the threshold: the alerts are the configured ones.
    plain = mw.replay(inputs, only=["first_seen_edge"])
    assert sorted(result.alerts["fingerprint"]) == sorted(plain.alerts["fingerprint"])
    low, high = result.alerts_at(0.05), result.alerts_at(0.95)
    assert len(high) <= len(result.alerts) <= len(low)
    assert result.summary().set_index("detector").loc["first_seen_edge", "alerts"] == len(
        result.alerts)
    windows = inputs.windows_frame()
    assert len(windows) == inputs.windows and (windows["part"] == 0).all()


def test_pr_curve_and_operating_point_follow_the_eval_rules(inputs):
    result = mw.replay(inputs, only=["first_seen_edge"], score_floor=0.05)
    curve = mw.pr_curve(result, detector="first_seen_edge")
    assert curve["threshold"].is_monotonic_increasing
    assert curve["alerts"].is_monotonic_decreasing
    at_default = curve.set_index("threshold").loc[0.5]
    report = result.evaluate()
    group = report.by_detector["first_seen_edge"]
    assert at_default["alerts"] == group.alerts
    assert at_default["recall"] == pytest.approx(group.detected / group.instances, abs=1e-4)
    budget = float(curve["alerts_per_day"].median())
    point = mw.operating_point(curve, max_alerts_per_day=budget)
    assert point["alerts_per_day"] <= budget
    fits = curve[curve["alerts_per_day"] <= budget]
    assert point["recall"] == fits["recall"].max()
    with pytest.raises(ValueError, match="budget"):
        mw.operating_point(curve, max_alerts_per_day=-1)
    frame = mw.report_frame(report)
    assert frame.loc[("overall", "all"), "instances"] == 6


def test_sweep_saves_a_config_the_pipeline_reads_back(inputs, tmp_path):
    swept = mw.sweep(inputs, "first_seen_edge",
                     {"learning_period": ["10m", "30m"], "threshold": [0.3, 0.7]})
    table = swept.table
    assert len(table) == 4 and len(swept.results) == 2  # one replay per parameter set
    for _, group in table.groupby("params.learning_period"):
        assert group.sort_values("threshold")["alerts"].is_monotonic_decreasing
    row = table.sort_values(["recall", "precision"], ascending=False).index[0]
    config = swept.config(row)
    path = mw.save_detector_config(config, tmp_path / "tuned.yaml", comment="test sweep")
    text = path.read_text()
    assert text.startswith("# Detector configuration") and "# test sweep" in text
    assert yaml.safe_load(text)["detectors"]["first_seen_edge"]["threshold"] == float(
        table.loc[row, "threshold"])
    loaded = mw.load_detector_config(path)
    again = mw.replay(inputs, loaded, only=["first_seen_edge"])
    assert len(again.alerts) == table.loc[row, "alerts"]
    # An all-numeric row comes back as floats; the config keeps the grid's integers.
    behaviour = mw.sweep(inputs, "source_behaviour", {"warmup": [100, 250]})
    numeric = behaviour.table.iloc[1]
    assert numeric.dtype == "float64"
    entry = behaviour.config(numeric)["source_behaviour"]
    assert entry["params"] == {"warmup": 250} and isinstance(entry["params"]["warmup"], int)
    mw.save_detector_config(behaviour.config(numeric), tmp_path / "behaviour.yaml")
    # Without labels a sweep still counts alerts per setting.
    unlabelled = dataclasses.replace(inputs, labels=None)
    counts = mw.sweep(unlabelled, "first_seen_edge", {"threshold": [0.3, 0.7]}).table
    assert counts["alerts"].tolist() == table[table["params.learning_period"] == "30m"][
        "alerts"].tolist()


def test_save_detector_config_refuses_what_start_up_would_refuse(tmp_path):
    out = tmp_path / "bad.yaml"
    with pytest.raises(ConfigError, match="detectors.nope: unknown detector"):
        mw.save_detector_config({"nope": {}}, out)
    with pytest.raises(ConfigError, match="threshold: must be a number"):
        mw.save_detector_config({"fanout_scan": {"threshold": "high"}}, out)
    assert not out.exists()


def test_store_handles_and_their_errors(built, sim, tmp_path):
    mw.current_store()  # the module's store is open
    with pytest.raises(RuntimeError, match="close it before building"):
        mw.build_store(sim, tmp_path / "second")
    with pytest.raises(FileNotFoundError, match="no store at"):
        mw.open_store(tmp_path / "missing")
    mw.current_store()  # a failed open leaves the open store alone


def test_nab_helpers_match_the_benchmark(shared_data):
    from detectors.evaluation.nab_runner import benchmark

    nab = shared_data / "nab"
    subset = mw.nab_corpus(nab / "data", categories=["artificialWithAnomaly"],
                           max_files_per_category=3)
    assert [s.category for s in subset] == ["artificialWithAnomaly"] * 3
    run = mw.run_nab(subset, profiles_path=nab / "config" / "profiles.json")
    everything = mw.run_nab(mw.nab_corpus(nab / "data"),
                            profiles_path=nab / "config" / "profiles.json")
    bench = benchmark("value_anomaly", nab / "data", nab / "labels" / "combined_windows.json",
                      nab / "config" / "profiles.json")
    assert everything.table().loc["standard", "normalized"] == pytest.approx(
        bench.results["standard"].normalized)
    series = run.series(subset[0].key)
    assert len(series) == len(subset[0]) and series["in_window"].any()
    assert not series.loc[series["probation"], "detected"].any()
    board = mw.nab_scoreboard(nab / "results" / "final_results.json", {"ours (28 files)":
                                                                        everything})
    assert board.loc["ours (28 files)", "ours"] and board.loc["null", "standard"] == 0
    assert board["standard"].is_monotonic_decreasing
    wg = mw.published_nab_scores(nab / "results", "windowedGaussian", subset)
    assert [len(s) for s in wg] == [len(s) for s in subset]
