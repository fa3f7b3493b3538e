"""Identity misuse: a workload identity (SPIFFE principal) presented by the wrong pod.

Istio gives every pod its own key pair for its service account's principal; a principal showing
up somewhere else means a copied key pair or a mis-assigned service account. Evidence is the
callee's record (the principal its proxy verified, and the caller's address), joined with what
the caller's own sidecar says about that address (its records name their pod, so the pipeline
learns address -> workload). Three findings:

* **service account mismatch** - the address belongs to workload W, and W presents a principal
  other than its declared service account (``service_accounts``: ``{"ns/workload": "sa"}``) or,
  when nothing is declared, other than the principal W's app has always presented
  (``min_observations`` learned sightings);
* **principal from another workload** - a principal that has always come from app A (learned)
  is presented from an address that belongs to app B;
* **principal from an address no sidecar vouches for** - a learned principal presented from an
  address for which, ``grace`` seconds later, no sidecar has reported being that pod (a key pair
  used from a pod without a sidecar, or from outside the mesh). The grace period lets the
  caller's own records arrive (they travel separately from the callee's); such a finding is
  reported with the first note processed after the grace period, whichever edge that note is
  on. The engine matches allowlists against that carrier note, not the deferred evidence, so
  exempt known holders with ``service_accounts`` (shared service accounts) or
  ``ignore_addresses`` (CIDRs of legitimate sidecar-less holders, e.g. VMs) instead.

A TLS version the principal's proxies never negotiated is added as corroboration (sidecars
negotiate the same version; a hand-rolled client often does not).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar

from detectors.base import DETECTORS, Detector
from detectors.findings import destination_endpoint, evidence, observed_at, source_endpoint
from detectors.observations import (
    app_of,
    is_destination_evidence,
    source_address,
    source_principal,
    source_workload,
    ts_of,
)
from meshwatch.bounded import BoundedMap
from meshwatch.records import Finding, Severity
from meshwatch.settings import parse_duration

Counts = dict[str, int]
_MAX_KEYS = 64  # distinct groups / principals / TLS versions kept per key
# Notes that name a caller's principal and address (one per address per edge and window).
_NOTES = (None, "first", "new_address", "new_principal")


@lru_cache(maxsize=65536)
def _group(workload: str) -> str:
    """``ns/app`` of a ``ns/workload`` (versions and canaries of an app share identity)."""
    namespace, _, name = workload.partition("/")
    return f"{namespace}/{app_of(name)}"


@lru_cache(maxsize=4096)
def _in_networks(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def _sa(principal: str) -> tuple[str | None, str | None]:
    parts = principal.split("/")
    if len(parts) >= 7 and parts[-4] == "ns" and parts[-2] == "sa":
        return parts[-3], parts[-1]
    return None, None


def _bump(counts: Counts | None, key: str) -> Counts:
    """Count ``key`` in place (a new dict for a new entry); at most `_MAX_KEYS` keys."""
    if counts is None:
        counts = {}
    if key in counts or len(counts) < _MAX_KEYS:
        counts[key] = counts.get(key, 0) + 1
    return counts


@DETECTORS.register("identity_misuse")
class IdentityMisuse(Detector):
    """A principal presented by a pod that is not one of its workload's pods.

    >>> from datetime import datetime, timedelta, UTC
    >>> det = IdentityMisuse(min_observations=3, grace=60)  # 3 minutes with sightings
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> pay = "spiffe://cluster.local/ns/shop/sa/pay"
    >>> def seen(s, wl, addr, p=pay):
    ...     return {"note": "new_address", "reporter": "destination", "mtls": True,
    ...             "source_principal": p, "source_workload": wl, "source_namespace": "shop",
    ...             "source_address": addr, "edge_src": p, "edge_dst": "db:5432",
    ...             "ts": t0 + timedelta(minutes=s)}
    >>> for minute in range(5):
    ...     det.learn_one(seen(minute, "pay", "10.0.0.5"))
    >>> det.score_one(seen(10, "pay-v2", "10.0.0.6"))   # a new pod of the same app
    0.0
    >>> det.score_one(seen(10, "ads", "10.0.0.9"))      # pay's principal from the ads pod
    0.9
    """

    name: ClassVar[str] = "identity_misuse"
    family: ClassVar[str] = "lateral_movement"
    consumes = "events"
    mitre: ClassVar[tuple[str, ...]] = ("TA0005", "T1078", "TA0008", "T1021")
    default_severity: ClassVar[Severity] = "critical"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = (
        {"max_principals": 5, "max_addresses": 5, "max_pending": 3}, 28)

    def __init__(self, service_accounts: Mapping[str, str] | None = None,
                 ignore_addresses: Sequence[str] = (), min_observations: int = 20,
                 grace: float = 120.0,
                 max_principals: int = 50_000, max_addresses: int = 200_000,
                 max_pending: int = 10_000, state_ttl: float = 7 * 86400.0) -> None:
        self.service_accounts = service_accounts or {}
        self.ignore_addresses = ignore_addresses
        self.min_observations = min_observations
        self.grace = grace
        self.max_principals = max_principals
        self.max_addresses = max_addresses
        self.max_pending = max_pending
        self.state_ttl = state_ttl

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        accounts = params.get("service_accounts", {})
        if not isinstance(accounts, Mapping) or not all(
                isinstance(k, str) and "/" in k and isinstance(v, str)
                for k, v in accounts.items()):
            raise ValueError("service_accounts: must map 'namespace/workload' (or "
                             "'namespace/app') to a service account name")
        ignore = params.get("ignore_addresses", ())
        if isinstance(ignore, str) or not all(isinstance(a, str) for a in ignore):
            raise ValueError("ignore_addresses: must be a list of IPs or CIDRs")
        for address in ignore:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError as exc:
                raise ValueError(f"ignore_addresses: {exc}") from None
        for key in ("grace", "state_ttl"):
            if key in params:
                params[key] = parse_duration(params[key])
        for key in ("min_observations", "max_principals", "max_addresses", "max_pending"):
            if key in params and (not isinstance(params[key], int) or params[key] < 1):
                raise ValueError(f"{key}: must be a positive integer")
        return params

    def _state(self) -> None:
        if not hasattr(self, "principal_groups_"):
            self.principal_groups_: BoundedMap[str, Counts] = BoundedMap(self.max_principals,
                                                                        self.state_ttl)
            self.group_principals_: BoundedMap[str, Counts] = BoundedMap(self.max_principals,
                                                                        self.state_ttl)
            self.tls_: BoundedMap[str, Counts] = BoundedMap(self.max_principals, self.state_ttl)
            # address -> ns/workload, from records the pod's own sidecar wrote.
            self.addresses_: BoundedMap[str, str] = BoundedMap(self.max_addresses,
                                                              self.state_ttl)
            # (principal, group) -> last counted: a sighting counts once per minute (notes
            # repeat per edge and window), so min_observations means distinct minutes.
            self.sightings_: BoundedMap[tuple[str, str], float] = BoundedMap(
                self.max_principals, self.state_ttl)
            # address -> (principal, first seen, the note), awaiting the caller's records.
            self.pending_: BoundedMap[str, tuple[str, float, dict[str, Any]]] = BoundedMap(
                self.max_pending, self.state_ttl)
            self.next_expiry_ = 0.0

    def learned_size(self) -> int:
        if not hasattr(self, "principal_groups_"):
            return 0
        return (len(self.principal_groups_) + len(self.group_principals_) + len(self.tls_)
                + len(self.addresses_) + len(self.pending_) + len(self.sightings_))

    # -- judging ---------------------------------------------------------------------------

    def _established(self, counts: Counts | None) -> bool:
        return counts is not None and sum(counts.values()) >= self.min_observations

    def _declared(self, workload: str) -> str | None:
        return self.service_accounts.get(workload) or self.service_accounts.get(_group(workload))

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_last"}

    def _judge(self, x: Mapping[str, Any]) -> tuple[float, str]:
        """`_verdict`, memoised for the learn_one that follows score_one on the same input (a
        transient cache, never pickled)."""
        last = self.__dict__.get("_last")
        if last is not None and last[0] is x:
            return last[1]
        verdict = self._verdict(x)
        self.__dict__["_last"] = (x, verdict)
        return verdict

    def _verdict(self, x: Mapping[str, Any]) -> tuple[float, str]:
        """(score, reason) for the note's own evidence; reason "pending" awaits the grace."""
        if (x.get("mtls") is not True or not is_destination_evidence(x)
                or x.get("note") not in _NOTES):
            return 0.0, ""
        principal, address = source_principal(x), source_address(x)
        if not principal or not address or not hasattr(self, "principal_groups_"):
            return 0.0, ""
        if self.ignore_addresses and _in_networks(address, tuple(self.ignore_addresses)):
            return 0.0, ""
        workload = source_workload(x) or self.addresses_.get(address)
        if workload is None:
            if self._established(self.principal_groups_.get(principal)):
                return 0.0, "pending"
            return 0.0, ""
        group = _group(workload)
        declared = self._declared(workload)
        namespace, account = _sa(principal)
        if declared is not None:
            if (namespace, account) != (workload.split("/", 1)[0], declared):
                return 1.0, (f"workload {workload} runs as service account {declared}, but its "
                             f"pod presented {principal}")
            return 0.0, ""
        usual = self.group_principals_.get(group)
        if self._established(usual) and principal not in (usual or {}):
            return 1.0, (f"workload {workload} has always presented "
                         f"{', '.join(sorted(usual or {}))}; its pod now presents {principal}")
        owners = self.principal_groups_.get(principal)
        if self._established(owners) and group not in (owners or {}):
            return 0.9, (f"{principal} has always come from {', '.join(sorted(owners or {}))}; "
                         f"it is now presented from {address}, a pod of {workload}")
        return 0.0, ""

    def _due(self, now: float) -> tuple[str, tuple[str, float, dict[str, Any]]] | None:
        pending = self.__dict__.get("pending_")
        if pending is None or not pending._data:  # the common case: nothing awaits
            return None
        address, item = next(self.pending_.items())
        return (address, item) if now - item[1] >= self.grace else None

    def score_one(self, x: Mapping[str, Any]) -> float:
        own, _ = self._judge(x)
        due = self._due(ts_of(x))
        return max(own, 0.9) if due is not None else own

    def _corroboration(self, principal: str, note: Mapping[str, Any]) -> str:
        version = note.get("tls_version")
        usual = self.tls_.get(principal) if hasattr(self, "tls_") else None
        if version and self._established(usual) and version not in (usual or {}):
            return (f" The caller negotiated {version}; {principal}'s proxies always "
                    f"negotiated {', '.join(sorted(usual or {}))}.")
        return ""

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        own, reason = self._judge(x)
        due = self._due(ts_of(x))
        detected_at = observed_at(x)  # a deferred finding is reported now, with its evidence
        if due is not None and own < 0.9:
            address, (principal, _first, note) = due
            owner = self.addresses_.get(address)
            where = (f"{address}, which belongs to {owner}" if owner else
                     f"{address}, an address for which no sidecar reported being a pod of "
                     f"this principal within {self.grace:.0f} s")
            owners = ", ".join(sorted(self.principal_groups_.get(principal) or {}))
            reason = f"{principal} (always seen from {owners}) was presented from {where}"
            x = note
            score = 0.9
        elif not reason or reason == "pending":
            return None
        principal = source_principal(x) or "?"
        address = source_address(x) or "?"
        return Finding(
            detector=self.name, entity=f"{principal}@{address}", ts=detected_at,
            score=score, severity=self.default_severity,
            title=f"Workload identity misuse: {principal} from {address}",
            summary=(f"{reason}. A copied key pair or a wrong service account lets this caller "
                     "act as that workload wherever its AuthorizationPolicies allow."
                     + self._corroboration(principal, x)),
            source=source_endpoint(x), destination=destination_endpoint(x), mitre=self.mitre,
            evidence=(evidence(x),),
        )

    # -- learning --------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, Any]) -> None:
        self._state()
        now = ts_of(x)
        own, reason = self._judge(x)
        self.__dict__.pop("_last", None)  # state changes below: the verdict may too
        due = self._due(now)
        if due is not None and own < 0.9:
            self.pending_.pop(due[0])  # reported with this note
        if x.get("note") not in _NOTES:
            return
        address = source_address(x)
        workload = source_workload(x)
        if address and workload and self.addresses_.get(address) != workload:
            self.addresses_.put(address, workload, now)
            pending = self.pending_.get(address)
            if pending is not None and (_group(workload) in (
                    self.principal_groups_.get(pending[0]) or {})):
                self.pending_.pop(address)  # a new pod of the principal's own app
        principal = source_principal(x)
        if reason == "pending" and address and principal and address not in self.pending_:
            self.pending_.put(address, (principal, now, dict(x)), now)
        if (own < 0.5 and reason != "pending" and principal and x.get("mtls") is True
                and is_destination_evidence(x)):
            workload = workload or (self.addresses_.get(address) if address else None)
            group = _group(workload) if workload else None
            last = self.sightings_.get((principal, group)) if group else None
            if group and (last is None or now - last >= 60.0):
                self.sightings_.put((principal, group), now, now)
                if address:
                    self.addresses_.touch(address, now)
                self.principal_groups_.put(
                    principal, _bump(self.principal_groups_.get(principal), group), now)
                self.group_principals_.put(
                    group, _bump(self.group_principals_.get(group), principal), now)
                version = x.get("tls_version")
                if version:
                    self.tls_.put(principal, _bump(self.tls_.get(principal), version), now)
        if now >= self.next_expiry_:
            for store in (self.principal_groups_, self.group_principals_, self.tls_,
                          self.addresses_, self.pending_, self.sightings_):
                store.expire(now)
            self.next_expiry_ = now + self.state_ttl / 10
