"""Compile an Envoy access-log format string into one regular expression.

Envoy writes a TEXT access log by substituting command operators (``%RESPONSE_CODE%``,
``%REQ(:METHOD)%``, ``%START_TIME(%s.%3f)%``...) into a template. Parsing inverts that: literal
text matches itself, each operator becomes one capture group. Quoted operators (``"%REQ(X)%"``)
may contain spaces (and even quotes that are not followed by the literal that closes the
field); unquoted ones may not. Groups are deliberately loose (``[^ ]*``): a line with the right
shape but a bad value (``abc`` as a status) is reported by field, not as "no match".

The expression never backtracks across quoted fields (possessive quantifiers), so a hostile
1 MiB line costs linear time. Lines it rejects get one bounded second chance
(`CompiledFormat.match_ambiguous`) for values that contain their own closing literal.

Unknown operators raise `ConfigError` at compile time: a typo in a per-topic format string must
stop start-up, not dead-letter every record.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from meshwatch.settings import ConfigError

# Operator -> value kind. "int": a number; "time": arg is a strftime format; "str": text.
# The list follows Envoy's access-log documentation (command operators), v1.20 .. v1.34.
_INT = "int"
_STR = "str"
_TIME = "time"

OPERATORS: dict[str, str] = {
    **{op: _TIME for op in (
        "START_TIME", "START_TIME_LOCAL", "EMIT_TIME", "EMIT_TIME_LOCAL",
        "DOWNSTREAM_PEER_CERT_V_START", "DOWNSTREAM_PEER_CERT_V_END",
        "UPSTREAM_PEER_CERT_V_START", "UPSTREAM_PEER_CERT_V_END")},
    **{op: _INT for op in (
        "REQUEST_HEADERS_BYTES", "RESPONSE_HEADERS_BYTES", "RESPONSE_TRAILERS_BYTES",
        "BYTES_RECEIVED", "BYTES_SENT", "RESPONSE_CODE", "DURATION", "REQUEST_DURATION",
        "REQUEST_TX_DURATION", "RESPONSE_DURATION", "RESPONSE_TX_DURATION",
        "DOWNSTREAM_HANDSHAKE_DURATION", "ROUNDTRIP_DURATION",
        "UPSTREAM_CONNECTION_POOL_READY_DURATION", "UPSTREAM_REQUEST_ATTEMPT_COUNT",
        "CONNECTION_ID", "UPSTREAM_CONNECTION_ID", "UPSTREAM_WIRE_BYTES_SENT",
        "UPSTREAM_WIRE_BYTES_RECEIVED", "UPSTREAM_HEADER_BYTES_SENT",
        "UPSTREAM_HEADER_BYTES_RECEIVED", "DOWNSTREAM_WIRE_BYTES_SENT",
        "DOWNSTREAM_WIRE_BYTES_RECEIVED", "DOWNSTREAM_HEADER_BYTES_SENT",
        "DOWNSTREAM_HEADER_BYTES_RECEIVED", "UPSTREAM_LOCAL_PORT", "UPSTREAM_REMOTE_PORT",
        "DOWNSTREAM_LOCAL_PORT", "DOWNSTREAM_DIRECT_LOCAL_PORT", "DOWNSTREAM_REMOTE_PORT",
        "DOWNSTREAM_DIRECT_REMOTE_PORT", "GRPC_STATUS_NUMBER",
        "UPSTREAM_BYTES_RETRANSMITTED", "UPSTREAM_PACKETS_RETRANSMITTED",
        "DOWNSTREAM_BYTES_RETRANSMITTED", "DOWNSTREAM_PACKETS_RETRANSMITTED")},
    **{op: _STR for op in (
        "PROTOCOL", "UPSTREAM_PROTOCOL", "RESPONSE_CODE_DETAILS",
        "CONNECTION_TERMINATION_DETAILS", "RESPONSE_FLAGS", "RESPONSE_FLAGS_LONG",
        "ROUTE_NAME", "VIRTUAL_CLUSTER_NAME", "UPSTREAM_HOST", "UPSTREAM_HOST_NAME",
        "UPSTREAM_HOST_NAME_WITHOUT_PORT", "UPSTREAM_CLUSTER", "UPSTREAM_CLUSTER_RAW",
        "UPSTREAM_LOCAL_ADDRESS", "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        "UPSTREAM_REMOTE_ADDRESS", "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        "UPSTREAM_TRANSPORT_FAILURE_REASON", "UPSTREAM_TLS_VERSION", "UPSTREAM_TLS_CIPHER",
        "UPSTREAM_TLS_SESSION_ID", "UPSTREAM_PEER_ISSUER", "UPSTREAM_PEER_CERT",
        "UPSTREAM_PEER_SUBJECT", "UPSTREAM_PEER_URI_SAN", "UPSTREAM_PEER_DNS_SAN",
        "UPSTREAM_PEER_IP_SAN", "UPSTREAM_LOCAL_URI_SAN", "UPSTREAM_LOCAL_DNS_SAN",
        "UPSTREAM_LOCAL_IP_SAN", "UPSTREAM_LOCAL_SUBJECT", "UPSTREAM_LOCAL_CLOSE_REASON",
        "UPSTREAM_DETECTED_CLOSE_TYPE", "DOWNSTREAM_LOCAL_ADDRESS",
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_DIRECT_LOCAL_ADDRESS",
        "DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_REMOTE_ADDRESS",
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_LOCAL_CLOSE_REASON",
        "DOWNSTREAM_DETECTED_CLOSE_TYPE", "DOWNSTREAM_TRANSPORT_FAILURE_REASON",
        "REQUESTED_SERVER_NAME", "DOWNSTREAM_PEER_URI_SAN", "DOWNSTREAM_PEER_DNS_SAN",
        "DOWNSTREAM_PEER_IP_SAN", "DOWNSTREAM_PEER_EMAIL_SAN", "DOWNSTREAM_PEER_OTHERNAME_SAN",
        "DOWNSTREAM_LOCAL_URI_SAN", "DOWNSTREAM_LOCAL_DNS_SAN", "DOWNSTREAM_LOCAL_IP_SAN",
        "DOWNSTREAM_LOCAL_EMAIL_SAN", "DOWNSTREAM_LOCAL_OTHERNAME_SAN",
        "DOWNSTREAM_PEER_SUBJECT", "DOWNSTREAM_PEER_ISSUER", "DOWNSTREAM_LOCAL_SUBJECT",
        "DOWNSTREAM_TLS_SESSION_ID", "DOWNSTREAM_TLS_CIPHER", "DOWNSTREAM_TLS_VERSION",
        "DOWNSTREAM_PEER_FINGERPRINT_256", "DOWNSTREAM_PEER_FINGERPRINT_1",
        "DOWNSTREAM_PEER_SERIAL", "DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_256",
        "DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_1", "DOWNSTREAM_PEER_CHAIN_SERIALS",
        "DOWNSTREAM_PEER_CERT", "TLS_JA3_FINGERPRINT", "TLS_JA4_FINGERPRINT", "HOSTNAME",
        "LOCAL_REPLY_BODY", "FILTER_CHAIN_NAME", "ACCESS_LOG_TYPE", "UNIQUE_ID", "STREAM_ID",
        "TRACE_ID", "SPAN_ID", "CUSTOM_FLAGS", "GRPC_STATUS", "REQ", "RESP", "TRAILER",
        "REQ_WITHOUT_QUERY", "ENVIRONMENT", "DYNAMIC_METADATA", "CLUSTER_METADATA",
        "UPSTREAM_METADATA", "ROUTE_METADATA", "LISTENER_METADATA", "VIRTUAL_HOST_METADATA",
        "METADATA", "FILTER_STATE", "UPSTREAM_FILTER_STATE", "CEL", "QUERY_PARAM", "PATH",
        "COMMON_DURATION", "REQUEST_HEADER", "RESPONSE_HEADER", "RESPONSE_TRAILER",
        "VIRTUAL_CLUSTER")},
}

# Operators that are meaningless without an argument (Envoy rejects them too).
NEEDS_ARGUMENT = frozenset({
    "REQ", "RESP", "TRAILER", "REQ_WITHOUT_QUERY", "ENVIRONMENT", "DYNAMIC_METADATA",
    "CLUSTER_METADATA", "UPSTREAM_METADATA", "ROUTE_METADATA", "LISTENER_METADATA",
    "VIRTUAL_HOST_METADATA", "METADATA", "FILTER_STATE", "UPSTREAM_FILTER_STATE", "CEL",
    "QUERY_PARAM", "COMMON_DURATION", "REQUEST_HEADER", "RESPONSE_HEADER", "RESPONSE_TRAILER",
})

@dataclass(frozen=True, slots=True)
class Command:
    """One ``%OPERATOR(arg):max%`` of a format string."""

    operator: str
    arg: str | None = None
    max_length: int | None = None

    @property
    def kind(self) -> str:
        return OPERATORS[self.operator]

    @property
    def label(self) -> str:
        return self.operator if self.arg is None else f"{self.operator}({self.arg})"


def tokenize(format_string: str) -> list[str | Command]:
    """Split a format string into literal text and commands, validating every operator.

    >>> tokenize('[%START_TIME%] "%REQ(:METHOD)%" 100%%')
    ['[', Command(operator='START_TIME', arg=None, max_length=None), '] "', \
Command(operator='REQ', arg=':METHOD', max_length=None), '" 100%']
    >>> tokenize("%BOGUS_OP%")
    Traceback (most recent call last):
    ...
    meshwatch.settings.ConfigError: unknown Envoy command operator %BOGUS_OP% at position 0 \
of the format string
    """
    tokens: list[str | Command] = []
    literal: list[str] = []
    pos = 0
    n = len(format_string)
    while pos < n:
        char = format_string[pos]
        if char != "%":
            literal.append(char)
            pos += 1
            continue
        if format_string.startswith("%%", pos):
            literal.append("%")
            pos += 2
            continue
        match = _match_command(format_string, pos)
        if match is None:
            raise ConfigError(
                f"bad command at position {pos} of the format string: "
                f"{format_string[pos:pos + 40]!r} (use %OPERATOR%, %OPERATOR(arg)% or %% "
                "for a literal percent)"
            )
        operator, arg, max_length, end = match
        if operator not in OPERATORS:
            raise ConfigError(
                f"unknown Envoy command operator %{operator}% at position {pos} of the "
                "format string"
            )
        if operator in NEEDS_ARGUMENT and not arg:
            raise ConfigError(f"Envoy command operator %{operator}% needs an argument, "
                              f"e.g. %{operator}(...)% (position {pos})")
        if literal:
            tokens.append("".join(literal))
            literal = []
        tokens.append(Command(operator, arg, max_length))
        pos = end
    if literal:
        tokens.append("".join(literal))
    return tokens


_NAME = re.compile(r"[A-Z0-9_]+")
_ARG_END = re.compile(r"\)(?::(\d+))?%")
_TAIL = re.compile(r"(?::(\d+))?%")


def _match_command(text: str, pos: int) -> tuple[str, str | None, int | None, int] | None:
    # Envoy's grammar: %NAME%, %NAME(arg)%, %NAME(arg):N%, %NAME:N%. Arguments may contain '%'
    # (strftime) and, for CEL, parentheses: the argument ends at the first ')' followed by
    # '%' or ':digits%'.
    name = _NAME.match(text, pos + 1)
    if name is None:
        return None
    operator = name.group(0)
    cursor = name.end()
    arg: str | None = None
    if cursor < len(text) and text[cursor] == "(":
        close = _ARG_END.search(text, cursor + 1)
        if close is None:
            return None
        arg = text[cursor + 1:close.start()]
        max_length = int(close.group(1)) if close.group(1) else None
        return operator, arg, max_length, close.end()
    tail = _TAIL.match(text, cursor)
    if tail is None:
        return None
    return operator, None, int(tail.group(1)) if tail.group(1) else None, tail.end()


# --- strftime-style time formats (START_TIME(...), *_CERT_V_END(...)) -------------------------

_TIME_PIECES: dict[str, tuple[str, str | None]] = {
    # specifier -> (regex, named group or None)
    "Y": (r"(?P<Y>\d{4})", "Y"), "y": (r"(?P<y>\d{2})", "y"), "m": (r"(?P<m>\d{1,2})", "m"),
    "d": (r"(?P<d>\d{1,2})", "d"), "e": (r" ?(?P<d>\d{1,2})", "d"),
    "H": (r"(?P<H>\d{1,2})", "H"), "I": (r"(?P<I>\d{1,2})", "I"), "M": (r"(?P<M>\d{2})", "M"),
    "S": (r"(?P<S>\d{2})", "S"), "p": (r"(?P<p>AM|PM|am|pm)", "p"),
    "z": (r"(?P<z>[+-]\d{2}:?\d{2}|Z)", "z"), "Z": (r"(?P<Z>[A-Za-z]{1,5})", "Z"),
    "b": (r"(?P<b>[A-Za-z]{3})", "b"), "h": (r"(?P<b>[A-Za-z]{3})", "b"),
    "B": (r"(?P<B>[A-Za-z]+)", "B"), "a": (r"[A-Za-z]{3}", None), "A": (r"[A-Za-z]+", None),
    "j": (r"\d{3}", None), "s": (r"(?P<s>\d+)", "s"), "f": (r"(?P<f>\d{1,9})", "f"),
    "n": (r"\n", None), "t": (r"\t", None), "%": (r"%", None),
}
_TIME_ALIASES = {"T": "%H:%M:%S", "F": "%Y-%m-%d", "D": "%m/%d/%y", "R": "%H:%M",
                 "r": "%I:%M:%S %p", "c": "%a %b %e %H:%M:%S %Y"}
_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_MONTHS_LONG = {name: i for i, name in enumerate(
    ("january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december"), 1)}


class TimeFormat:
    """A compiled strftime format (Envoy flavour: ``%f`` / ``%3f`` fractions, ``%s`` epoch).

    >>> TimeFormat("%Y-%m-%d %H:%M:%S.%3f").parse("2024-05-03 16:53:43.372").isoformat()
    '2024-05-03T16:53:43.372000+00:00'
    >>> TimeFormat("%s").parse("1700000000").isoformat()
    '2023-11-14T22:13:20+00:00'
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        parts: list[str] = []
        seen: set[str] = set()
        i = 0
        while i < len(spec):
            char = spec[i]
            if char != "%":
                parts.append(re.escape(char))
                i += 1
                continue
            j = i + 1
            while j < len(spec) and spec[j] in "0123456789E*-_#":
                j += 1
            if j >= len(spec):
                parts.append("%")
                break
            flags, letter = spec[i + 1:j], spec[j]
            i = j + 1
            if letter in _TIME_ALIASES:
                spec = spec[:i] + _TIME_ALIASES[letter] + spec[i:]
                continue
            if letter == "S" and "E" in flags:  # absl %E3S / %E*S: seconds with a fraction
                piece = r"(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?"
                group: str | None = "S"
            else:
                piece, group = _TIME_PIECES.get(letter, (r"\S+?", None))
            if group is not None:
                if group in seen:  # one named group per field; repeats just have to match
                    piece = re.sub(r"\(\?P<\w+>", "(?:", piece)
                seen.add(group)
            parts.append(piece)
        self.pattern = "".join(parts)
        self.regex = re.compile(self.pattern)
        # For embedding into a line expression: the same shape without named groups.
        self.inline = re.sub(r"\(\?P<\w+>", "(?:", self.pattern)

    def parse(self, text: str) -> datetime:
        """An aware UTC datetime; raises ValueError with a readable message."""
        match = self.regex.fullmatch(text)
        if match is None:
            raise ValueError(f"does not match time format {self.spec!r}")
        g = match.groupdict()
        fraction = g.get("f")
        micros = int((fraction + "000000")[:6]) if fraction else 0
        if g.get("s") is not None:
            ts = datetime.fromtimestamp(int(g["s"]), UTC)
            return ts.replace(microsecond=micros) if fraction else ts
        if g.get("Y") is not None:
            year = int(g["Y"])
        elif g.get("y") is not None:
            year = 2000 + int(g["y"])
        else:
            raise ValueError(f"time format {self.spec!r} has no year")
        if g.get("m") is not None:
            month = int(g["m"])
        elif g.get("b") is not None:
            month = _MONTHS.get(g["b"].lower(), 0)
        elif g.get("B") is not None:
            month = _MONTHS_LONG.get(g["B"].lower(), 0)
        else:
            month = 1
        hour = int(g["H"]) if g.get("H") is not None else 0
        if g.get("I") is not None:
            hour = int(g["I"]) % 12 + (12 if (g.get("p") or "").lower() == "pm" else 0)
        tz = UTC
        zone = g.get("z")
        if zone and zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        ts = datetime(year, month, int(g.get("d") or 1), hour, int(g.get("M") or 0),
                      int(g.get("S") or 0), micros, tzinfo=tz)
        return ts.astimezone(UTC)


@lru_cache(maxsize=64)
def time_format(spec: str) -> TimeFormat:
    return TimeFormat(spec)


# --- the line expression ------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledFormat:
    """A format string as one anchored expression; group ``i`` is ``commands[i]``."""

    format_string: str
    commands: tuple[Command, ...]
    regex: re.Pattern[str]
    # The expression piece by piece (literal or command), for `diagnose`.
    parts: tuple[str, ...] = ()
    part_commands: tuple[int, ...] = ()  # command index of each part, -1 for literal text
    # For `match_ambiguous`: ("lit", text) or ("cmd", command index, mode, time regex).
    steps: tuple[tuple[Any, ...], ...] = ()
    _prefixes: dict[int, re.Pattern[str]] = field(default_factory=dict, compare=False,
                                                  repr=False)

    def match(self, line: str) -> tuple[str, ...] | None:
        m = self.regex.fullmatch(line)
        return None if m is None else m.groups()

    def match_ambiguous(self, line: str, budget: int = 512) -> tuple[str, ...] | None:
        """Groups for a line the fast expression rejects because a value holds its closing
        literal (a User-Agent with ``" "`` in it): try each possible end of each field, earliest
        first, until the rest of the line fits. ``budget`` caps the attempts, so hostile lines
        cost bounded time (and lines over `AMBIGUOUS_MAX_CHARS` are not tried at all).
        """
        if len(line) > AMBIGUOUS_MAX_CHARS:
            return None
        steps = self.steps
        count = len(steps)
        values: list[str] = [""] * len(self.commands)
        left = [budget]

        def walk(i: int, pos: int) -> bool:
            if i == count:
                return pos == len(line)
            step = steps[i]
            if step[0] == "lit":
                return line.startswith(step[1], pos) and walk(i + 1, pos + len(step[1]))
            _, index, mode, regex = step
            after = steps[i + 1][1] if i + 1 < count and steps[i + 1][0] == "lit" else None
            for end in _field_ends(line, pos, mode, regex, after):
                left[0] -= 1
                if left[0] < 0:
                    return False
                values[index] = line[pos:end]
                if walk(i + 1, end):
                    return True
            return False

        return tuple(values) if walk(0, 0) else None

    def _prefix(self, k: int) -> re.Pattern[str]:
        pattern = self._prefixes.get(k)
        if pattern is None:
            pattern = self._prefixes[k] = re.compile("".join(self.parts[:k]), re.DOTALL)
        return pattern

    def progress(self, line: str) -> tuple[int, int]:
        """(parts matched, column reached): how far a non-matching line follows the format."""
        done, column = 0, 0
        for k in range(1, len(self.parts) + 1):
            m = self._prefix(k).match(line)
            if m is None:
                break
            done, column = k, m.end()
        return done, column

    def diagnose(self, line: str) -> str:
        """Why ``line`` does not match, naming the field (1-based) and column."""
        done, column = self.progress(line)
        found = line[column:column + 24]
        if done >= len(self.parts):
            return f"unexpected text after the last field at column {column + 1}: {found!r}"
        command_index = self.part_commands[done]
        if command_index >= 0:
            command = self.commands[command_index]
            return (f"field {command_index + 1} ({command.label}) cannot be read at column "
                    f"{column + 1}: {found!r}")
        previous = [c for c in self.part_commands[:done] if c >= 0]
        after = (f" after field {previous[-1] + 1} ({self.commands[previous[-1]].label})"
                 if previous else " at the start")
        literal = re.sub(r"\\(.)", r"\1", self.parts[done])
        return f"expected {literal!r}{after} at column {column + 1}, found {found!r}"


AMBIGUOUS_MAX_CHARS = 16 * 1024


def _field_ends(line: str, pos: int, mode: str, regex: re.Pattern[str] | None,
                after: str | None) -> Iterator[int]:
    """Candidate end positions of one field starting at ``pos``, earliest first."""
    if regex is not None:
        m = regex.match(line, pos)
        if m is not None:
            yield m.end()
        return
    if mode == "quoted":
        if after is None:
            yield len(line)
            return
        q = line.find(after, pos)
        while q >= 0:
            yield q
            q = line.find(after, q + 1)
        return
    run_end = line.find(" ", pos)
    run_end = len(line) if run_end < 0 else run_end
    if after is None or after.startswith(" "):
        yield run_end
        return
    q = line.find(after, pos, run_end + len(after))
    while 0 <= q <= run_end:
        yield q
        q = line.find(after, q + 1, run_end + len(after))


def _command_pattern(command: Command, quoted: bool, closing: str) -> str:
    if command.kind == _TIME and command.arg:
        return f"({time_format(command.arg).inline})"
    if quoted:
        # Anything up to the quote that is followed by the literal closing this field; a quote
        # that is not (inside a User-Agent, say) is part of the value. Possessive: no backtracking.
        return f'((?:[^"]++|"(?!{re.escape(closing)}))*+)'
    return r"([^ ]*)"


@lru_cache(maxsize=256)
def compile_format(format_string: str) -> CompiledFormat:
    """Compile an Envoy format string; raises `ConfigError` for unknown or malformed commands.

    >>> f = compile_format('[%START_TIME%] "%REQ(USER-AGENT)%" %RESPONSE_CODE%\\n')
    >>> f.match('[2020-11-25T21:26:18.409Z] "curl/8 (x "y")" 200')
    ('2020-11-25T21:26:18.409Z', 'curl/8 (x "y")', '200')
    """
    text = format_string.rstrip("\r\n")
    tokens = tokenize(text)
    if not any(isinstance(t, Command) for t in tokens):
        raise ConfigError("the format string holds no command operator (%...%)")
    parts: list[str] = []
    part_commands: list[int] = []
    commands: list[Command] = []
    steps: list[tuple[Any, ...]] = []
    for i, token in enumerate(tokens):
        if isinstance(token, str):
            parts.append(re.escape(token))
            part_commands.append(-1)
            steps.append(("lit", token))
            continue
        before = tokens[i - 1] if i > 0 else None
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        quoted = (isinstance(before, str) and before.endswith('"')
                  and isinstance(after, str) and after.startswith('"'))
        closing = after[1:] if quoted and isinstance(after, str) else ""
        if quoted and not closing:
            # The closing quote ends the line (or a command follows directly).
            pattern = r'((?:[^"]++|"(?!\Z))*+)' if i + 2 >= len(tokens) else r'([^"]*+)'
            parts.append(pattern)
        else:
            parts.append(_command_pattern(token, quoted, closing))
        time_regex = (re.compile(time_format(token.arg).inline)
                      if token.kind == _TIME and token.arg else None)
        steps.append(("cmd", len(commands), "quoted" if quoted else "plain", time_regex))
        part_commands.append(len(commands))
        commands.append(token)
    return CompiledFormat(format_string, tuple(commands), re.compile("".join(parts), re.DOTALL),
                          tuple(parts), tuple(part_commands), steps=tuple(steps))
