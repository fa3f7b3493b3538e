"""Bounded keyed state: a map with a size cap and a time-to-live that counts what it evicts.

Every keyed in-memory map in meshwatch is one of these (DESIGN.md habit 6, after the OTel
servicegraph connector's store): an attacker who sprays random identities must not grow memory
without bound, and operators must be able to see how often state was dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class EvictionCounts:
    """How many entries left the map, and why."""

    capacity: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        return self.capacity + self.expired


@dataclass
class BoundedMap(Generic[K, V]):
    """Insertion/refresh-ordered map with ``max_items`` and a TTL measured in the caller's clock.

    Time is passed in (event time, not wall time) so replays evict exactly as the live run did.

    >>> m: BoundedMap[str, int] = BoundedMap(max_items=2, ttl=10.0)
    >>> m.put("a", 1, now=0.0); m.put("b", 2, now=1.0); m.put("c", 3, now=2.0)
    >>> list(m.keys()), m.evictions.capacity
    (['b', 'c'], 1)
    >>> m.expire(now=11.5)
    [('b', 2)]
    >>> list(m.keys()), m.evictions.expired
    (['c'], 1)
    """

    max_items: int
    ttl: float
    on_evict: Callable[[K, V], None] | None = None
    evictions: EvictionCounts = field(default_factory=EvictionCounts)
    _data: OrderedDict[K, tuple[float, V]] = field(default_factory=OrderedDict, repr=False)

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise ValueError("max_items must be >= 1")
        if self.ttl <= 0:
            raise ValueError("ttl must be > 0")

    def put(self, key: K, value: V, now: float) -> None:
        """Insert or refresh ``key``; evicts the stalest entry when over capacity."""
        data = self._data
        if key in data:
            data.move_to_end(key)
        data[key] = (now, value)
        if len(data) > self.max_items:
            old_key, (_, old_value) = data.popitem(last=False)
            self.evictions.capacity += 1
            if self.on_evict is not None:
                self.on_evict(old_key, old_value)

    def get(self, key: K, default: V | None = None) -> V | None:
        item = self._data.get(key)
        return default if item is None else item[1]

    def touch(self, key: K, now: float) -> None:
        item = self._data.get(key)
        if item is not None:
            self._data[key] = (now, item[1])
            self._data.move_to_end(key)

    def pop(self, key: K, default: V | None = None) -> V | None:
        item = self._data.pop(key, None)
        return default if item is None else item[1]

    def expire(self, now: float) -> list[tuple[K, V]]:
        """Remove and return entries not refreshed within ``ttl`` of ``now``."""
        cutoff = now - self.ttl
        gone: list[tuple[K, V]] = []
        data = self._data
        while data:
            key, (seen, value) = next(iter(data.items()))
            if seen > cutoff:
                break
            del data[key]
            gone.append((key, value))
        self.evictions.expired += len(gone)
        if self.on_evict is not None:
            for key, value in gone:
                self.on_evict(key, value)
        return gone

    def drain(self) -> list[tuple[K, V]]:
        """Remove and return everything (end of input); not counted as eviction."""
        items = [(k, v) for k, (_, v) in self._data.items()]
        self._data.clear()
        return items

    def keys(self) -> Iterator[K]:
        return iter(self._data.keys())

    def items(self) -> Iterator[tuple[K, V]]:
        return ((k, v) for k, (_, v) in self._data.items())

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __getstate__(self) -> dict:
        # on_evict is a bound callback of the owner; the owner re-attaches it after a restore.
        return {"max_items": self.max_items, "ttl": self.ttl, "evictions": self.evictions,
                "_data": self._data, "on_evict": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
