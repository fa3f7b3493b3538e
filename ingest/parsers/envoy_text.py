"""Envoy/Istio TEXT access logs (``envoy-text``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ingest.parsers.base import PARSERS, ParseResult
from ingest.parsers.common import RecordError, decode_utf8, guarded
from ingest.parsers.envoy_fields import (
    EventParser,
    Extractor,
    FieldPlan,
    make_event_parser,
    make_extractor,
    make_plan,
)
from ingest.parsers.envoy_format import CompiledFormat, compile_format
from meshwatch.formats import KNOWN_TEXT_FORMATS
from meshwatch.records import Origin


@dataclass(frozen=True)
class TextLayout:
    """One compiled format plus the plan that reads meshwatch's fields out of its groups."""

    name: str
    compiled: CompiledFormat
    plan: tuple[FieldPlan, ...]
    extract: Extractor  # groups -> canonical values (for OTLP bodies merged with attributes)
    event: EventParser  # groups -> EdgeEvent directly (the hot path)

    @classmethod
    def of(cls, name: str, format_string: str) -> TextLayout:
        compiled = compile_format(format_string)
        plan = make_plan(compiled.commands,
                         lambda i, command: f"field {i + 1} ({command.label})")
        return cls(name, compiled, plan, make_extractor(plan), make_event_parser(plan))


class TextFields:
    """Line -> canonical values, trying one configured format or the known ones.

    Shared by the TEXT parser and the OTLP log parser (Istio ships the TEXT line as the body).
    """

    def __init__(self, format_string: str | None) -> None:
        if format_string is not None:
            self.layouts = [TextLayout.of("configured", format_string)]
        else:
            self.layouts = [TextLayout.of(name, fmt) for name, fmt in KNOWN_TEXT_FORMATS.items()]
        self.configured = format_string is not None
        self._use(0)

    def _use(self, index: int) -> None:
        # A stream sticks to one format: the parser tries the last matching one first.
        self._last = index
        self.current = self.layouts[index]
        self.fullmatch = self.current.compiled.regex.fullmatch
        self.event = self.current.event

    def match(self, line: str) -> tuple[TextLayout, Sequence[str]]:
        """The layout that reads ``line`` and its groups; RecordError (with a reason) if none."""
        layout = self.layouts[self._last]
        match = layout.compiled.regex.fullmatch(line)
        if match is not None:  # the hot path: same format as the previous line
            return layout, match.groups()
        stripped = line.rstrip("\r\n")
        if not stripped.strip():
            raise RecordError("empty record")
        for i, layout in enumerate(self.layouts):
            match = layout.compiled.regex.fullmatch(stripped)
            if match is not None:
                self._use(i)
                return layout, match.groups()
        # A value holding its own closing literal (an attacker's User-Agent with '" "' in it)
        # must not push the line into the dead letters: bounded second try.
        for layout in self.layouts:
            groups = layout.compiled.match_ambiguous(stripped)
            if groups is not None:
                return layout, groups
        raise RecordError(self._mismatch(stripped))

    def fields(self, line: str) -> dict[str, Any]:
        """Canonical values of one line; RecordError (with the reason) if it is bad."""
        layout, groups = self.match(line)
        return layout.extract(groups)

    def _mismatch(self, line: str) -> str:
        if self.configured:
            return "line does not match the format string: " + self.layouts[0].compiled.diagnose(
                line)
        best = max(self.layouts, key=lambda layout: layout.compiled.progress(line)[1])
        return ("line matches no known Envoy format; set format_string (closest, "
                f"{best.name}: {best.compiled.diagnose(line)})")


@PARSERS.register("envoy-text")
class EnvoyTextParser:
    """Envoy TEXT access-log lines: Istio's default format, meshwatch's, Envoy's, or any format.

    With no ``format_string`` each line is tried against the known formats of
    `meshwatch.formats.KNOWN_TEXT_FORMATS` (meshwatch, Istio default, Envoy default). A format
    string is compiled once; unknown operators raise `meshwatch.settings.ConfigError` here.

    >>> p = EnvoyTextParser()
    >>> line = (b'[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - '
    ...     b'"-" 0 135 3 1 "-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" '
    ...     b'"httpbin:8000" "127.0.0.1:80" inbound|8000|| 127.0.0.1:41854 10.44.1.27:80 '
    ...     b'10.44.1.23:37652 outbound_.8000_._.httpbin.foo.svc.cluster.local default')
    >>> [e] = p.parse(line, Origin("access.log", 2))
    >>> e.reporter, e.mtls, e.destination_service, e.destination_port, e.source_address
    ('destination', True, 'httpbin.foo.svc.cluster.local', 8000, '10.44.1.23')
    >>> EnvoyTextParser("%RESPONSE_CODE% %START_TIME%").parse(b"abc 2020-01-01T00:00:00Z",
    ...     Origin("x", 1))[0].reason
    "field 1 (RESPONSE_CODE): expected an integer, got 'abc'"
    """

    name: ClassVar[str] = "envoy-text"
    origin: ClassVar[str] = "envoy_text"

    def __init__(self, format_string: str | None = None, *, cluster_domain: str = "cluster.local",
                 trust_domain: str = "cluster.local") -> None:
        self.format_string = format_string
        self.cluster_domain = cluster_domain
        self.trust_domain = trust_domain
        self._fields = TextFields(format_string)

    def __getstate__(self) -> dict[str, Any]:
        return {"format_string": self.format_string, "cluster_domain": self.cluster_domain,
                "trust_domain": self.trust_domain}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["format_string"], cluster_domain=state["cluster_domain"],  # type: ignore[misc]
                      trust_domain=state["trust_domain"])

    @guarded
    def parse(self, payload: bytes, origin: Origin) -> ParseResult:
        try:
            line = payload.decode()
        except UnicodeDecodeError:
            line = decode_utf8(payload)  # raises with the position
        if line[-1:] == "\n":  # shippers that keep Envoy's line ending
            line = line.rstrip("\r\n")
        fields = self._fields
        match = fields.fullmatch(line)
        if match is not None:  # the hot path: the same format as the previous line
            return [fields.event(match.groups(), self.origin, self.cluster_domain,
                                 self.trust_domain)]
        layout, groups = fields.match(line)
        return [layout.event(groups, self.origin, self.cluster_domain, self.trust_domain)]

    def flush(self, now: float | None = None) -> ParseResult:
        return []
