"""The feed API fuzzed from its own OpenAPI schema (schemathesis), with an admin token, with a
viewer token and without one; tokens stored hashed; bad tokens rate-limited.

The app runs in-process (ASGI) over a real embedded store seeded with alerts, silences and a
delivery, so generated requests reach real handlers and real SQL. Expected: no 5xx anywhere;
without credentials every endpoint but ``/healthz`` (and the login form's POST, which takes the
token in its body) answers 401; a viewer gets 403 on every write but logging in and out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from alerts.api import create_app
from alerts.tokens import TokenStore
from meshwatch.settings import StoreSettings, load_settings
from meshwatch.store import Store
from tests.alerts.factories import alert
from tests.faults.conftest import Recorder

#: Endpoints reachable without a token, by design.
PUBLIC = {("GET", "/healthz")}
#: The login form posts the token in its body (401 for a bad one, 422 for a malformed body).
LOGIN = ("POST", "/api/v1/session")
#: Writes a viewer may make: log in and out.
VIEWER_WRITES = {LOGIN, ("DELETE", "/api/v1/session")}
#: Server-sent events never end: called once, not fuzzed (see test_stream_needs_a_token).
STREAM = "/api/v1/alerts/stream"


@dataclass
class Api:
    app: FastAPI
    store: Store
    admin: str
    viewer: str
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    store = Store.open(StoreSettings(path=tmp_path_factory.mktemp("api") / "store"))
    store.upsert_alerts([alert(entity=f"shop/web{i}->db.pay:5432", minutes=i) for i in range(5)])
    # A high failure limit here: the rate limit has its own test below.
    settings = load_settings(overrides={"api": {"auth_failure_limit": 1_000_000}})
    app = create_app(store, settings)
    tokens = TokenStore(store)
    _, admin = tokens.create("fuzz-admin", "admin")
    _, viewer = tokens.create("fuzz-viewer", "viewer")
    yield Api(app, store, admin, viewer,
              {"admin": Counter(), "none": Counter(), "viewer": Counter()})
    store.close()


@pytest.fixture(scope="module")
def api_schema(api: Api) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_asgi(
        "/openapi.json", api.app, headers={"Authorization": f"Bearer {api.admin}"})


def _call(case: schemathesis.Case, token: str | None) -> tuple[int, str]:
    """(status, a short description of the request and the answer) for one case."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    case.headers = headers
    case.cookies = {}
    response = case.call(headers=headers)
    sent = {k: v for k, v in (("path", case.path_parameters), ("query", case.query),
                              ("body", case.body)) if v}
    return response.status_code, f"{sent!r:.300} -> {response.text[:300]!r}"


def _runner(operation: Any, token: str | None, seen: Counter[int], total: Counter[int],
            examples: int, example: dict[int, str]) -> Callable[[], None]:
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        status, what = _call(case, token)
        seen[status] += 1
        total[status] += 1
        example.setdefault(status, what)

    return run


def fuzz(schema: schemathesis.schemas.BaseSchema, mode: str, token: str | None,
         expect: Callable[[tuple[str, str], int], str | None], api: Api,
         examples: int, skip: frozenset[str] = frozenset()) -> list[str]:
    """Every operation with ``examples`` generated requests (seeded: the same requests each
    run); returns one line per operation whose answers broke ``expect``.

    (schemathesis's own pytest plugin does not load under pytest 9, so the operations are
    driven through its Hypothesis strategies directly.)"""
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in skip:
            continue
        key = (operation.method.upper(), operation.path)
        seen: Counter[int] = Counter()
        example: dict[int, str] = {}
        _runner(operation, token, seen, api.statuses[mode], examples, example)()
        for status, n in sorted(seen.items()):
            why = expect(key, status)
            if why:
                problems.append(f"{key[0]} {key[1]}: {n} x {status} ({why}), e.g. "
                                f"{example[status]}")
    return problems


def test_admin_token_no_server_errors(api: Api, api_schema: schemathesis.schemas.BaseSchema
                                      ) -> None:
    def expect(key: tuple[str, str], status: int) -> str | None:
        return "server error" if status >= 500 else None

    problems = fuzz(api_schema, "admin", api.admin, expect, api, 15, frozenset({STREAM}))
    assert not problems, "\n".join(problems)


def test_no_token_answers_401(api: Api, api_schema: schemathesis.schemas.BaseSchema) -> None:
    def expect(key: tuple[str, str], status: int) -> str | None:
        if key in PUBLIC:
            return None if status == 200 else "public endpoint failed"
        if key == LOGIN:
            return None if status in (401, 422) else "login without a valid token"
        return None if status == 401 else "expected 401 without a token"

    problems = fuzz(api_schema, "none", None, expect, api, 5, frozenset({STREAM}))
    assert not problems, "\n".join(problems)


def test_viewer_token_cannot_write(api: Api, api_schema: schemathesis.schemas.BaseSchema
                                   ) -> None:
    def expect(key: tuple[str, str], status: int) -> str | None:
        if status >= 500:
            return "server error"
        if key[0] not in ("GET", "HEAD", "OPTIONS") and key not in VIEWER_WRITES:
            return None if status == 403 else "a viewer wrote"
        if key == ("GET", "/api/v1/tokens"):
            return None if status == 403 else "a viewer listed tokens"
        return None

    problems = fuzz(api_schema, "viewer", api.viewer, expect, api, 5, frozenset({STREAM}))
    assert not problems, "\n".join(problems)


def test_stream_needs_a_token(api: Api) -> None:
    with TestClient(api.app) as c:
        assert c.get(STREAM).status_code == 401


def test_tokens_are_stored_hashed(api: Api) -> None:
    rows = api.store.query("SELECT * FROM {db}.api_tokens")
    assert rows
    text = repr(rows)
    for secret in (api.admin, api.viewer):
        assert secret not in text
        assert secret.split("_", 2)[2] not in text  # not even the random part (may hold "_")


def test_repeated_bad_tokens_are_rate_limited(tmp_path: Path, api: Api) -> None:
    app = create_app(api.store, load_settings(overrides={"api": {"auth_failure_limit": 5}}))
    wrong = "mwt_0123456789ab_" + "A" * 43
    with TestClient(app) as c:
        statuses = [c.get("/api/v1/alerts", headers={"Authorization": f"Bearer {wrong}"})
                    .status_code for _ in range(8)]
        limited = c.get("/api/v1/alerts", headers={"Authorization": f"Bearer {api.admin}"})
        login = c.post("/api/v1/session", json={"token": wrong})
    assert statuses == [401] * 5 + [429] * 3
    # The address stays limited for the window, even with a good token now.
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert login.status_code == 429


def test_fuzz_summary(api: Api, measured: Recorder) -> None:
    """Runs last in this module: the counts of what the fuzzing above sent."""
    total = {k: sum(v.values()) for k, v in api.statuses.items()}
    assert all(total.values()), total
    assert not any(s >= 500 for c in api.statuses.values() for s in c)
    measured(scenario="schemathesis over the OpenAPI schema: admin token, viewer token, none",
             records_in=sum(total.values()),
             detail="requests (status: count) admin " + _fmt(api.statuses["admin"])
                    + "; viewer " + _fmt(api.statuses["viewer"]) + "; none "
                    + _fmt(api.statuses["none"]),
             result="0 responses >= 500; 401 without a token; 403 for viewer writes; tokens "
                    "hashed; 429 after 5 bad tokens")


def _fmt(counts: Counter[int]) -> str:
    return ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()))
