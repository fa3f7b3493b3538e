"""The Envoy format-string compiler: operators, arguments, time formats, diagnostics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.parsers.envoy_format import (
    NEEDS_ARGUMENT,
    OPERATORS,
    Command,
    TimeFormat,
    compile_format,
    tokenize,
)
from meshwatch.formats import KNOWN_TEXT_FORMATS, MESHWATCH_JSON_FORMAT
from meshwatch.settings import ConfigError


@pytest.mark.parametrize("name", sorted(KNOWN_TEXT_FORMATS))
def test_every_known_format_compiles(name: str) -> None:
    compiled = compile_format(KNOWN_TEXT_FORMATS[name])
    assert compiled.commands[0] == Command("START_TIME")


def test_json_format_operators_are_all_known() -> None:
    for value in MESHWATCH_JSON_FORMAT.values():
        [command] = tokenize(value)
        assert isinstance(command, Command) and command.operator in OPERATORS


@pytest.mark.parametrize(("text", "command"), [
    ("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", Command("REQ", "X-ENVOY-ORIGINAL-PATH?:PATH")),
    ("%REQ(USER-AGENT):64%", Command("REQ", "USER-AGENT", 64)),
    ("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", Command("RESP", "X-ENVOY-UPSTREAM-SERVICE-TIME")),
    ("%TRAILER(GRPC-STATUS)%", Command("TRAILER", "GRPC-STATUS")),
    ("%START_TIME(%Y/%m/%dT%H:%M:%S%z %s)%", Command("START_TIME", "%Y/%m/%dT%H:%M:%S%z %s")),
    ("%ENVIRONMENT(POD_NAME)%", Command("ENVIRONMENT", "POD_NAME")),
    ("%DYNAMIC_METADATA(istio.mixer:status):20%",
     Command("DYNAMIC_METADATA", "istio.mixer:status", 20)),
    ("%FILTER_STATE(istio.peer_principal:PLAIN)%",
     Command("FILTER_STATE", "istio.peer_principal:PLAIN")),
    ("%CEL(request.headers['x-id'].size())%", Command("CEL", "request.headers['x-id'].size()")),
    ("%DOWNSTREAM_PEER_CERT_V_END(%s)%", Command("DOWNSTREAM_PEER_CERT_V_END", "%s")),
    ("%UPSTREAM_PEER_URI_SAN:100%", Command("UPSTREAM_PEER_URI_SAN", None, 100)),
])
def test_operator_arguments_and_max_length(text: str, command: Command) -> None:
    assert tokenize(text) == [command]


def test_literal_percent_and_text_around_commands() -> None:
    assert tokenize("a %% b %PROTOCOL% c") == ["a % b ", Command("PROTOCOL"), " c"]


@pytest.mark.parametrize(("text", "message"), [
    ("%RESPONSE_COED%", r"unknown Envoy command operator %RESPONSE_COED% at position 0"),
    ("x %DOWNSTREAM_PEER_URI%", r"unknown Envoy command operator %DOWNSTREAM_PEER_URI% at "
                                r"position 2"),
    ("%REQ%", r"%REQ% needs an argument"),
    ("%ENVIRONMENT()%", r"%ENVIRONMENT% needs an argument"),
    ("%RESPONSE_CODE", r"bad command at position 0"),
    ("50% off", r"bad command at position 2"),
])
def test_bad_format_strings_raise_config_error_naming_the_problem(text: str,
                                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_format(text)


def test_a_format_without_operators_is_refused() -> None:
    with pytest.raises(ConfigError, match="no command operator"):
        compile_format("just text")


def test_operators_needing_arguments_are_known_operators() -> None:
    assert set(OPERATORS) >= NEEDS_ARGUMENT


def test_quoted_fields_take_spaces_and_inner_quotes_unquoted_fields_do_not() -> None:
    compiled = compile_format('%PROTOCOL% "%REQ(USER-AGENT)%" "%REQ(:AUTHORITY)%"')
    assert compiled.match('HTTP/2 "a "b" c" "host"') == ("HTTP/2", 'a "b" c', "host")
    assert compiled.match('HTTP /2 "a" "host"') is None


def test_unset_and_empty_values() -> None:
    compiled = compile_format("%PROTOCOL% %RESPONSE_CODE% \"%REQ(X)%\"")
    assert compiled.match('- - ""') == ("-", "-", "")


@pytest.mark.parametrize(("spec", "text", "expected"), [
    ("%Y-%m-%dT%H:%M:%S.%3fZ", "2024-05-01T10:00:00.123Z",
     datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)),
    ("%Y-%m-%dT%H:%M:%S.%9f%z", "2024-05-01T12:00:00.123456789+0200",
     datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ("%s", "1714557600", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ("%s.%6f", "1714557600.000042", datetime(2024, 5, 1, 10, 0, 0, 42, tzinfo=UTC)),
    ("%d/%b/%Y:%H:%M:%S %z", "01/May/2024:10:00:00 +0000", datetime(2024, 5, 1, 10, 0,
                                                                     tzinfo=UTC)),
    ("%F %T", "2024-05-01 10:00:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ("%Y-%m-%dT%H:%M:%E3SZ", "2024-05-01T10:00:00.500Z",
     datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)),
])
def test_strftime_time_formats(spec: str, text: str, expected: datetime) -> None:
    assert TimeFormat(spec).parse(text) == expected


def test_time_format_mismatch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="does not match time format"):
        TimeFormat("%Y-%m-%d").parse("May 1st")


def test_start_time_with_spaces_is_one_field() -> None:
    compiled = compile_format("%START_TIME(%Y-%m-%d %H:%M:%S)% %RESPONSE_CODE%")
    assert compiled.match("2024-05-01 10:00:00 200") == ("2024-05-01 10:00:00", "200")


def test_diagnose_names_field_and_column() -> None:
    compiled = compile_format('[%START_TIME%] "%REQ(:METHOD)% %PROTOCOL%" %RESPONSE_CODE%')
    assert compiled.diagnose("[x] GET") == (
        "expected '] \"' after field 1 (START_TIME) at column 4, found ' GET'")
    assert compiled.diagnose('[x] "GET HTTP/1.1" 200 extra') == (
        "unexpected text after the last field at column 23: ' extra'")


def test_ambiguous_match_prefers_the_split_where_the_rest_fits() -> None:
    compiled = compile_format('"%REQ(USER-AGENT)%" %RESPONSE_CODE% %PROTOCOL%')
    line = '"evil" 1 "x" 200 HTTP/1.1'
    assert compiled.match(line) is None
    assert compiled.match_ambiguous(line) == ('evil" 1 "x', "200", "HTTP/1.1")
    assert compiled.match_ambiguous('"a" 200 HTTP/1.1 junk') is None
