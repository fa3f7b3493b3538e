"""`meshwatch parse`: show what meshwatch makes of access logs and spans, one event per line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, BinaryIO, TextIO

import click
import typer

from meshwatch.cli.common import fail
from meshwatch.records import EdgeEvent, ParseFailure

FORMATS = ("auto", "envoy-text", "envoy-json", "otlp-json", "otlp-proto", "otlp-log", "ztunnel")
FORMAT_STRING_FORMATS = ("auto", "envoy-text", "otlp-log")

HELP = "\n\n".join([
    "Parse access logs or spans and print one edge event per line as JSON.",
    "Each output line is one EdgeEvent with exactly the contract keys (null where unknown): "
    "who called whom (workload, namespace, SPIFFE principal, address), the service and port, "
    "request details, bytes from the caller's view, and mTLS (true/false only on "
    "destination-side evidence). Records that cannot be parsed go to stderr as "
    "FILE:LINE: reason. Spans pair across all files; unpaired spans are printed at the end.",
    "Exit status: 0 if at least one record parsed, 1 if none did, 2 on usage errors.",
    "[bold]Examples[/bold]",
    "  meshwatch parse access.log              [dim]# format sniffed per record[/dim]",
    "  meshwatch parse -f envoy-json /var/log/envoy/*.json",
    "  meshwatch parse -f otlp-proto spans.bin [dim]# length-delimited OTLP protobuf[/dim]",
    "  kubectl logs deploy/reviews -c istio-proxy | meshwatch parse -",
    "  meshwatch parse --format-string '\\[%START_TIME%] %RESPONSE_CODE% "
    "%UPSTREAM_CLUSTER%' my.log",
    "  meshwatch parse access.log | jq 'select(.mtls == false)'  [dim]# plaintext[/dim]",
])


def register(app: typer.Typer) -> None:
    app.command("parse", help=HELP, no_args_is_help=True)(parse)


def parse(
    files: Annotated[
        list[Path],
        typer.Argument(help="Files to parse; '-' reads stdin.", show_default=False,
                       metavar="FILE"),
    ],
    format_name: Annotated[
        str,
        typer.Option("--format", "-f", help=f"Input format: {'|'.join(FORMATS)}.",
                     metavar="FORMAT"),
    ] = "auto",
    format_string: Annotated[
        str | None,
        typer.Option("--format-string",
                     help="Envoy access-log format string for TEXT logs in a custom format "
                          "(envoy-text, otlp-log bodies, auto).",
                     metavar="S"),
    ] = None,
    resolve: Annotated[
        bool,
        typer.Option("--resolve/--no-resolve",
                     help="Fill identity from what other records taught about the same "
                          "addresses (as the pipeline does)."),
    ] = False,
) -> None:
    # Imported here so `meshwatch --help` stays fast.
    from ingest.identity import IdentityResolver
    from ingest.parsers import make_parser
    from ingest.sources.files import SourceError, check_readable, read_records
    from meshwatch.settings import ConfigError

    if format_name not in FORMATS:
        fail(f"unknown format {format_name!r} (known: {', '.join(FORMATS)})")
    options = {}
    if format_string is not None:
        if format_name not in FORMAT_STRING_FORMATS:
            fail(f"--format-string applies to {', '.join(FORMAT_STRING_FORMATS)}, "
                 f"not {format_name}")
        options["format_string"] = format_string
    try:
        parser = make_parser(format_name, **options)
    except ConfigError as exc:
        fail(f"--format-string: {exc}")
    for path in files:  # check everything first: a missing file is a usage error, not a result
        try:
            check_readable(path)
        except SourceError as exc:
            fail(str(exc))

    out = _binary_stdout()
    resolver = IdentityResolver() if resolve else None
    parsed = 0
    try:
        for path in files:
            for record in read_records(path, format_name):
                parsed += _emit(parser.parse(record.payload, record.origin), out, resolver)
        parsed += _emit(parser.flush(None), out, resolver)
        out.flush()
    except SourceError as exc:
        fail(str(exc))
    except BrokenPipeError:  # `meshwatch parse big.log | head`: the reader has had enough
        _silence_stdout()
    raise typer.Exit(0 if parsed else 1)


def _silence_stdout() -> None:
    # Python would complain once more when it flushes stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _binary_stdout() -> BinaryIO:
    """stdout as bytes (events are JSON bytes already); text streams get a thin adapter."""
    buffer = getattr(sys.stdout, "buffer", None)
    return buffer if buffer is not None else _TextAdapter(sys.stdout)  # type: ignore[return-value]


class _TextAdapter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        return self.stream.write(data.decode())

    def flush(self) -> None:
        self.stream.flush()


def _emit(items: list[EdgeEvent | ParseFailure], out: BinaryIO, resolver: object | None) -> int:
    events = 0
    for item in items:
        if isinstance(item, ParseFailure):
            click.echo(f"{item.origin}: {item.reason}", err=True)
            continue
        if resolver is not None:
            item = resolver.resolve(item)  # type: ignore[attr-defined]
        out.write(item.to_json() + b"\n")
        events += 1
    return events
