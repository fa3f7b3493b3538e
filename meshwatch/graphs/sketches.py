"""Latency quantiles over several windows by merging their t-digest sketches.

Percentiles cannot be averaged (the p99 of two windows is not the mean of their p99s); t-digests
merge into the digest of the union, whose quantiles are as accurate as each window's.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from datasketches import tdigest_float

QUANTILES = (0.5, 0.95, 0.99)


def merge_sketches(encoded: Sequence[str]) -> tdigest_float | None:
    """The merge of base64-encoded serialized t-digests; None when none holds a value.

    >>> a, b = tdigest_float(50), tdigest_float(50)
    >>> for v in range(1, 101): a.update(float(v))
    >>> for v in range(101, 201): b.update(float(v))
    >>> enc = [base64.b64encode(bytes(s.serialize())).decode() for s in (a, b)]
    >>> merged = merge_sketches(enc)
    >>> merged.get_total_weight(), 85 <= merged.get_quantile(0.5) <= 115  # t-digest: ~rank
    (200, True)
    """
    merged: tdigest_float | None = None
    for text in encoded:
        if not text:
            continue
        try:
            sketch = tdigest_float.deserialize(base64.b64decode(text))
        except (binascii.Error, RuntimeError, ValueError) as exc:
            raise ValueError(f"unreadable latency sketch: {exc}") from None
        if sketch.is_empty():
            continue
        if merged is None:
            merged = sketch  # merge into the first: one deserialization fewer
        else:
            merged.merge(sketch)
    return merged


def merged_quantiles(encoded: Sequence[str],
                     quantiles: Sequence[float] = QUANTILES) -> tuple[float | None, ...]:
    """p50/p95/p99 (by default) of the merged sketches; Nones when there is no latency."""
    merged = merge_sketches(encoded)
    if merged is None:
        return tuple(None for _ in quantiles)
    return tuple(float(merged.get_quantile(q)) for q in quantiles)
