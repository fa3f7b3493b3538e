"""The parser contract and its registry.

A parser turns one raw record (one log line, one Kafka message) into zero or more `EdgeEvent`s
and `ParseFailure`s. It never raises on bad bytes: a failure is a value with a reason, so the
caller can dead-letter it (DESIGN.md habit 8). Stateful parsers (span pairing) hold records
until their partner arrives and release them from `flush`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from meshwatch.records import EdgeEvent, Origin, ParseFailure
from meshwatch.registry import Registry

ParseResult = list[EdgeEvent | ParseFailure]


@runtime_checkable
class Parser(Protocol):
    """One record format.

    ``name`` is the registry key (``envoy-json``...). ``parse`` handles one raw record;
    ``flush(now=None)`` releases held state: with a time (epoch seconds, event time) only what
    has expired by then, with ``None`` everything (end of input). Stateless parsers return ``[]``.
    Parser objects are pickled into checkpoints, so held state survives a restart.
    """

    name: ClassVar[str]

    def parse(self, payload: bytes, origin: Origin) -> ParseResult: ...

    def flush(self, now: float | None = None) -> ParseResult: ...


PARSERS: Registry[type[Any]] = Registry("format")


def make_parser(format_name: str, **options: Any) -> Parser:
    """Build the registered parser for ``format_name``; ``options`` go to its constructor."""
    import ingest.parsers  # noqa: F401  - registers the built-in parsers

    return PARSERS.get(format_name)(**options)


class StatelessParser:
    """Base for parsers that hold nothing between records."""

    name: ClassVar[str] = ""

    def flush(self, now: float | None = None) -> ParseResult:
        return []
