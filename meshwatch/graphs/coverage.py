"""mTLS coverage: per destination namespace and time bucket, the share of edges and of requests
protected by mTLS.

Namespaces are the *destination's*: mTLS is evidence the callee saw, and coverage is what a
namespace owner enforces for its inbound traffic. Edges and requests without destination-side
evidence are counted apart (``unknown``) and left out of the shares instead of being guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from meshwatch.graphs.timerange import TimeRange
from meshwatch.records import format_ts


@dataclass(frozen=True)
class CoverageRow:
    start: datetime
    end: datetime
    namespace: str | None
    edges: int
    edges_all_mtls: int
    edges_mixed: int
    edges_plaintext: int
    edges_unknown: int
    requests: int
    requests_mtls: int
    requests_plaintext: int
    requests_unknown: int

    @property
    def edge_share(self) -> float | None:
        """All-mTLS edges among the edges with destination-side evidence."""
        judged = self.edges - self.edges_unknown
        return self.edges_all_mtls / judged if judged else None

    @property
    def request_share(self) -> float | None:
        """mTLS requests among the requests with destination-side evidence."""
        judged = self.requests_mtls + self.requests_plaintext
        return self.requests_mtls / judged if judged else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": format_ts(self.start), "end": format_ts(self.end),
            "namespace": self.namespace,
            "edges": self.edges, "edges_all_mtls": self.edges_all_mtls,
            "edges_mixed": self.edges_mixed, "edges_plaintext": self.edges_plaintext,
            "edges_unknown": self.edges_unknown, "edge_share": self.edge_share,
            "requests": self.requests, "requests_mtls": self.requests_mtls,
            "requests_plaintext": self.requests_plaintext,
            "requests_unknown": self.requests_unknown, "request_share": self.request_share,
        }


@dataclass
class CoverageReport:
    range: TimeRange
    bucket_seconds: int
    namespace: str | None
    buckets: list[CoverageRow]
    totals: list[CoverageRow]

    def to_dict(self) -> dict[str, Any]:
        return {"range": self.range.to_dict(), "bucket_seconds": self.bucket_seconds,
                "namespace": self.namespace,
                "totals": [r.to_dict() for r in self.totals],
                "buckets": [r.to_dict() for r in self.buckets]}


def coverage_from_rows(rows: list[dict[str, Any]], time_range: TimeRange,
                       bucket_seconds: int) -> list[CoverageRow]:
    """`coverage_rows` results as rows with their bucket's start and end (clipped to range)."""
    out = []
    for row in rows:
        start = time_range.start + timedelta(seconds=int(row["bucket"]) * bucket_seconds)
        end = min(start + timedelta(seconds=bucket_seconds), time_range.end)
        out.append(CoverageRow(
            start=start, end=end, namespace=row["ns"],
            edges=int(row["edges"]), edges_all_mtls=int(row["edges_all_mtls"]),
            edges_mixed=int(row["edges_mixed"]), edges_plaintext=int(row["edges_plaintext"]),
            edges_unknown=int(row["edges_unknown"]), requests=int(row["requests"]),
            requests_mtls=int(row["requests_mtls"]),
            requests_plaintext=int(row["requests_plaintext"]),
            requests_unknown=int(row["requests_unknown"]),
        ))
    return out
