"""Reading detector inputs: the fields of an edge note or a closed window, whichever it is.

Notes carry EdgeEvent names (``source_workload``, ``ts``); windows carry the graph builder's
(``src_workload``, ``window_start``). Detectors ask here instead of repeating both spellings, and
the outcome helpers (`failed`, `denied`) encode Envoy's conventions in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

_VERSION_SUFFIX = re.compile(r"(-v\d+[a-z0-9]*|-canary|-stable|-primary|-blue|-green)$")
# Envoy response flags meaning "the call did not reach a working upstream".
_FAILURE_FLAGS = frozenset(("UF", "URX", "UH", "NR", "UO", "UT", "LR", "UC", "DC", "UAEX",
                            "RBAC", "NC", "DPE", "UPE"))


def get(x: Mapping[str, Any], event_key: str, window_key: str) -> Any:
    """``x[event_key]`` if set, else ``x[window_key]``."""
    value = x.get(event_key)
    return x.get(window_key) if value is None else value


def ts_of(x: Mapping[str, Any]) -> float:
    """Event time in epoch seconds: a note's ``ts``, a window's ``last_seen``/``window_start``."""
    ts = x.get("ts")
    if type(ts) is datetime:  # the hot path: a note
        return ts.timestamp()
    for key in ("ts", "last_seen", "window_start"):
        value = x.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


def source_workload(x: Mapping[str, Any]) -> str | None:
    """``namespace/workload`` of the caller, if known."""
    workload = get(x, "source_workload", "src_workload")
    if not workload:
        return None
    return f"{get(x, 'source_namespace', 'src_namespace') or '-'}/{workload}"


def source_principal(x: Mapping[str, Any]) -> str | None:
    return get(x, "source_principal", "src_principal")


def source_address(x: Mapping[str, Any]) -> str | None:
    return get(x, "source_address", "src_address")


def source_namespace(x: Mapping[str, Any]) -> str | None:
    return get(x, "source_namespace", "src_namespace")


def destination_namespace(x: Mapping[str, Any]) -> str | None:
    return get(x, "destination_namespace", "dst_namespace")


def destination_service(x: Mapping[str, Any]) -> str | None:
    return get(x, "destination_service", "dst_service")


def destination_workload(x: Mapping[str, Any]) -> str | None:
    return get(x, "destination_workload", "dst_workload")


def destination_port(x: Mapping[str, Any]) -> int | None:
    port = get(x, "destination_port", "dst_port")
    return port if isinstance(port, int) and not isinstance(port, bool) else None


@lru_cache(maxsize=65536)
def app_of(workload: str | None) -> str | None:
    """The app a workload belongs to: its name without a version/canary suffix.

    >>> app_of("reviews-v3"), app_of("cart-canary"), app_of("db")
    ('reviews', 'cart', 'db')
    """
    return _VERSION_SUFFIX.sub("", workload) if workload else None


def source_group(x: Mapping[str, Any]) -> str | None:
    """``namespace/app`` of the caller: sibling versions and canaries share it."""
    workload = get(x, "source_workload", "src_workload")
    if not workload:
        return None
    return f"{source_namespace(x) or '-'}/{app_of(workload)}"


def source_key(x: Mapping[str, Any]) -> str:
    """The most stable name of the caller: workload, else principal, else the edge source."""
    return (source_workload(x) or source_principal(x) or str(x.get("edge_src") or "")
            or source_address(x) or "unknown")


def source_aliases(x: Mapping[str, Any]) -> list[str]:
    """Every name the caller goes by in this input (edge source, principal, workload)."""
    out = []
    for value in (x.get("edge_src"), source_principal(x), source_workload(x)):
        if value and value not in out:
            out.append(str(value))
    return out


def destination_group(x: Mapping[str, Any]) -> str | None:
    """``namespace/app`` of the callee when its workload is known, else its service name."""
    workload = destination_workload(x)
    if workload:
        return f"{destination_namespace(x) or '-'}/{app_of(workload)}"
    service = destination_service(x)
    if service:
        parts = service.split(".")
        if len(parts) >= 2 and (len(parts) == 2 or parts[2] == "svc"):
            return f"{parts[1]}/{parts[0]}"
        return service
    return None


def is_destination_evidence(x: Mapping[str, Any]) -> bool:
    """Recorded by the callee's proxy: only such records know the caller's transport security."""
    return x.get("reporter") == "destination"


def denied(x: Mapping[str, Any]) -> bool:
    """An authorization denial: HTTP 403 or Envoy's RBAC / ext_authz flags."""
    flags = x.get("response_flags") or ""
    return x.get("response_code") == 403 or "RBAC" in flags or "UAEX" in flags


def failed(x: Mapping[str, Any]) -> bool:
    """The call failed: 4xx/5xx, or a failure flag (TCP proxies log code 0 on success).

    >>> failed({"response_code": 0, "response_flags": "-"}), failed({"response_code": 404})
    (False, True)
    >>> failed({"response_code": 0, "response_flags": "UF"})
    True
    """
    code = x.get("response_code")
    if isinstance(code, int) and code >= 400:
        return True
    flags = x.get("response_flags")
    if flags and flags != "-":
        return any(flag in _FAILURE_FLAGS for flag in flags.split(","))
    return False
