"""Runbooks: one Markdown page per detector, versioned with the code and linked from alerts.

The built-in pages live beside this module (``<detector>.md``) and the API serves them as HTML
at ``/runbooks/{detector}``. A configured external base URL (a company wiki) replaces the link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from markdown_it import MarkdownIt

_NAME = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class RunbookLinks:
    """Builds the runbook URL for a detector.

    >>> RunbookLinks("http://127.0.0.1:8080").url("plaintext_edge")
    'http://127.0.0.1:8080/runbooks/plaintext_edge'
    >>> RunbookLinks("http://x", external_base="https://wiki/sec/").url("plaintext_edge")
    'https://wiki/sec/plaintext_edge'
    """

    public_url: str
    external_base: str | None = None

    def url(self, detector: str) -> str:
        if self.external_base:
            return f"{self.external_base.rstrip('/')}/{detector}"
        return f"{self.public_url.rstrip('/')}/runbooks/{detector}"


def available() -> list[str]:
    """Detectors that have a built-in runbook."""
    folder = resources.files(__name__)
    return sorted(p.name[:-3] for p in folder.iterdir() if p.name.endswith(".md"))


def markdown(detector: str) -> str | None:
    """The runbook's Markdown source, or None if there is none."""
    if not _NAME.match(detector):
        return None
    page = resources.files(__name__) / f"{detector}.md"
    return page.read_text("utf-8") if page.is_file() else None


def html(detector: str) -> str | None:
    """The runbook rendered to an HTML page (raw HTML in the Markdown is escaped)."""
    source = markdown(detector)
    if source is None:
        return None
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(source)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Runbook: {detector}</title>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;"
        "padding:0 1rem;color:#1d1f21}code,pre{background:#f3f4f6;border-radius:4px}"
        "pre{padding:.75rem;overflow:auto}h1{font-size:1.6rem}</style></head><body>"
        f"{body}</body></html>"
    )
