"""`meshwatch silence ... --api URL --token T`: silences through a running meshwatch, with auth."""

from __future__ import annotations

import json
import socket
import threading
import time

import uvicorn
from typer.testing import CliRunner

from alerts.api import create_app
from alerts.tokens import TokenStore
from meshwatch.cli.main import app as cli
from meshwatch.settings import load_settings
from meshwatch.store import Store


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_silences_through_the_api_need_a_token(tmp_path):
    settings = load_settings(overrides={"store": {"path": str(tmp_path / "d")}})
    store = Store.open(settings.store)
    _, admin = TokenStore(store).create("ops", "admin")
    _, viewer = TokenStore(store).create("look", "viewer")
    port = _port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, settings), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    runner = CliRunner()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        create = ["silence", "create", "-m", "detector=plaintext_edge", "--duration", "1h",
                  "--creator", "ana", "--comment", "CHG-1", "--api", url, "--json"]
        no_token = runner.invoke(cli, create, env={"MESHWATCH_TOKEN": ""})
        assert no_token.exit_code == 2 and "token" in no_token.output
        denied = runner.invoke(cli, [*create, "--token", viewer])
        assert denied.exit_code != 0 and "403" in denied.output
        made = runner.invoke(cli, [*create, "--token", admin])
        assert made.exit_code == 0, made.output
        silence_id = json.loads(made.output)[0]["id"]
        listed = runner.invoke(cli, ["silence", "list", "--api", url, "--json"],
                               env={"MESHWATCH_TOKEN": viewer})
        assert listed.exit_code == 0 and silence_id in listed.output
        expired = runner.invoke(cli, ["silence", "expire", silence_id, "--api", url, "--token",
                                      admin, "--json"])
        assert expired.exit_code == 0, expired.output
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()
