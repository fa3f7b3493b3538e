"""The broker goes away for longer than every client time-out, then comes back.

Two ways a broker disappears, exercised at the same time on two brokers (one outage window,
half the wall-clock time): it hangs (SIGSTOP: connections stay open, requests time out), and it
vanishes (a proxy between meshwatch and the broker stops listening and resets every connection:
connection refused). Either way the single-process worker must keep running, keep its committed
offsets, and after recovery consume the rest: the store ends exactly as the clean run's.
Tansu keeps its data in memory, so the broker process itself is never restarted.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from meshwatch.devbroker import Broker
from tests.faults.conftest import KafkaInput, Recorder, run_to_end
from tests.faults.helpers import TOPIC, Snapshot, TcpProxy, WorkerProcess, publish, snapshot, tansu
from tests.faults.test_crash_replay import assert_same_as_clean

#: Longer than kafka-python's request time-out (30 s) and the group session (6 s).
OUTAGE = 35.0
SETTINGS = {"commit_interval": "500ms", "max_poll_records": 500}


def _until_a_third(kin: KafkaInput, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + 120
    while kin.committed(worker.config.stem) < kin.records // 3:
        assert worker.alive(), worker.output()[-3000:]
        assert time.monotonic() < deadline, "no progress before the outage"
        time.sleep(0.05)


@pytest.mark.slow
def test_hung_and_unreachable_brokers(kafka_input: KafkaInput, payloads: list[bytes],
                                      clean_run: Snapshot, tmp_path: Path,
                                      measured: Recorder) -> None:
    proxy_port = TcpProxy(("127.0.0.1", 1)).port  # a free port number for the proxy
    with tansu(tmp_path, advertised_port=proxy_port) as direct:
        proxy = TcpProxy(("127.0.0.1", int(direct.bootstrap.rsplit(":", 1)[1])),
                         port=proxy_port).start()
        try:
            # Broker B: every client connection goes through the proxy (it is advertised).
            via = f"127.0.0.1:{proxy_port}"
            direct.create_topics({TOPIC: 1})
            [records] = publish(via, TOPIC, payloads, 1)
            assert records == kafka_input.records
            proxied = KafkaInput(Broker(via, direct.process, direct.log), records, tmp_path)
            hung = kafka_input.worker("hung", kafka=SETTINGS).start()
            cut = proxied.worker("cutoff", kafka=SETTINGS).start()
            _until_a_third(kafka_input, hung)
            _until_a_third(proxied, cut)

            # Broker A hangs, broker B vanishes, for the same OUTAGE seconds.
            broker_a = kafka_input.broker.process
            connections_before = proxy.connections
            broker_a.send_signal(signal.SIGSTOP)
            proxy.down()
            checks = 0
            try:
                deadline = time.monotonic() + OUTAGE
                while time.monotonic() < deadline:
                    assert hung.alive(), "hung broker: the worker died\n" + hung.output()[-3000:]
                    assert cut.alive(), "lost broker: the worker died\n" + cut.output()[-3000:]
                    checks += 1
                    time.sleep(1.0)
            finally:
                broker_a.send_signal(signal.SIGCONT)
                proxy.up()
            after = {"hung": kafka_input.committed("hung"), "cutoff": proxied.committed("cutoff")}
            run_to_end(kafka_input, hung)
            run_to_end(proxied, cut)
            reconnects = proxy.connections - connections_before
        finally:
            proxy.close()
    assert reconnects >= 1
    for name, worker, how in (
            ("hung", hung, "hung (SIGSTOP, requests time out)"),
            ("cutoff", cut, "unreachable (proxy refuses and resets connections)")):
        got = snapshot(worker.store)
        assert_same_as_clean(got, clean_run, records)
        measured(
            scenario=f"broker {how} for {OUTAGE:.0f} s mid-run",
            records_in=records, records_stored=got.events, windows=len(got.windows),
            requests=got.requests, alerts=len(got.alerts),
            alert_count_total=got.alert_count_total,
            detail=f"worker alive at all {checks} checks during the outage; committed offset "
                   f"right after recovery {after[name]}; log: "
                   f"{worker.output().count('offset commit failed')} failed-commit episode(s)",
            result="no crash; store identical to the clean run")
