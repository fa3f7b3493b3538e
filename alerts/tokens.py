"""API tokens and browser sessions: created once, stored as a salted hash, verified cheaply.

A token reads ``mwt_<id>_<secret>``: ``id`` (12 hex digits) is public and finds the row,
``secret`` (256 random bits) is shown once and never stored: the row keeps a salted scrypt
hash. Verifying a token runs scrypt once; after that the process remembers a SHA-256 of the
accepted token for a few seconds, so a busy feed pays scrypt only on a cache miss, and a
revocation reaches every process within `ROW_TTL` seconds (at once in the revoking process).

A session is a short-lived token of kind ``session`` created at login from an API token
(its ``parent``): it carries the parent's name and role and dies with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from alerts.versioning import next_version
from meshwatch.records import format_ts
from meshwatch.store import Store
from meshwatch.store.store import ch_ts

Role = Literal["viewer", "analyst", "admin", "integration"]
Kind = Literal["api", "session"]
ROLES: tuple[str, ...] = ("viewer", "analyst", "admin", "integration")
TOKEN_PREFIX = "mwt_"  # noqa: S105 - the public prefix, not a secret
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
_TOKEN = re.compile(r"^mwt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
# scrypt work factor: ~16 MiB and ~30-60 ms per verification on one core; only cache misses pay.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 * 1024 * 1024}
ROW_TTL = 5.0  # seconds a token row (revocation state) is cached
ACCEPT_TTL = 300.0  # seconds an accepted token skips scrypt (while its row says it is valid)


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode("ascii"), salt=salt, **_SCRYPT).hex()


def _parse_ch(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def parse_token(presented: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None (no store lookup for garbage).

    >>> parse_token("mwt_0123456789ab_" + "A" * 43)[0], parse_token("Bearer x")
    ('0123456789ab', None)
    """
    match = _TOKEN.match(presented)
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True)
class Token:
    """A token's public record (never the secret or its hash)."""

    id: str
    kind: Kind
    name: str
    role: Role
    parent: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str = ""

    def state(self, now: datetime) -> Literal["active", "expired", "revoked"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "name": self.name, "role": self.role,
            "created_at": format_ts(self.created_at), "created_by": self.created_by,
            "expires_at": format_ts(self.expires_at) if self.expires_at else None,
            "revoked_at": format_ts(self.revoked_at) if self.revoked_at else None,
            "revoked_by": self.revoked_by or None,
            "state": self.state(now or datetime.now(UTC)),
        }


@dataclass(frozen=True)
class _Row:
    token: Token
    salt: str
    hash: str


class TokenStore:
    """Tokens in the store's ``api_tokens`` table, shared by the API, the CLI and the demo."""

    def __init__(self, store: Store,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[float, _Row | None]] = {}
        self._accepted: dict[str, tuple[float, bytes]] = {}

    # -- writing ---------------------------------------------------------------------------

    def _write(self, row: _Row) -> None:
        t = row.token
        self.store.insert_rows("api_tokens", [{
            "id": t.id, "kind": t.kind, "name": t.name, "role": t.role, "parent": t.parent,
            "salt": row.salt, "hash": row.hash, "created_at": ch_ts(t.created_at),
            "created_by": t.created_by,
            "expires_at": ch_ts(t.expires_at) if t.expires_at else None,
            "revoked_at": ch_ts(t.revoked_at) if t.revoked_at else None,
            "revoked_by": t.revoked_by, "version": next_version(),
        }])
        with self._lock:
            self._rows.pop(t.id, None)
            self._accepted.pop(t.id, None)

    def _new(self, kind: Kind, name: str, role: str, created_by: str,
             ttl: float | None, parent: str = "") -> tuple[Token, str]:
        if not NAME.match(name or ""):
            raise ValueError("name: 1-64 characters: letters, digits and _ . @ + - "
                             "(starting with a letter or digit)")
        if role not in ROLES:
            raise ValueError(f"role: one of {', '.join(ROLES)}")
        if ttl is not None and ttl <= 0:
            raise ValueError("expires_in: must be positive")
        now = self.clock()
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        token = Token(token_id, kind, name, role, parent, now,  # type: ignore[arg-type]
                      created_by, now + timedelta(seconds=ttl) if ttl else None, None)
        self._write(_Row(token, salt.hex(), _hash(secret, salt)))
        return token, f"{TOKEN_PREFIX}{token_id}_{secret}"

    def create(self, name: str, role: str, created_by: str = "cli",
               ttl: float | None = None) -> tuple[Token, str]:
        """A new API token and its secret (shown once: only its hash is kept)."""
        return self._new("api", name, role, created_by, ttl)

    def create_session(self, parent: Token, ttl: float) -> tuple[Token, str]:
        """A browser session for an API token: same name and role, ends with the token."""
        return self._new("session", parent.name, parent.role, parent.name, ttl, parent.id)

    def revoke(self, token_id: str, by: str) -> Token | None:
        """Revoke a token (its sessions with it); None if there is no such token."""
        row = self._row(token_id, fresh=True)
        if row is None:
            return None
        if row.token.revoked_at is not None:
            return row.token
        revoked = dataclasses.replace(row.token, revoked_at=self.clock(), revoked_by=by)
        self._write(_Row(revoked, row.salt, row.hash))
        return revoked

    # -- reading ---------------------------------------------------------------------------

    def _select(self, where: str, params: dict[str, Any]) -> list[_Row]:
        # ``where`` is one of this class's fixed clauses; values are bound parameters.
        rows = self.store.query(
            "SELECT id, kind, name, role, parent, salt, hash, created_at, created_by, "  # noqa: S608
            "expires_at, revoked_at, revoked_by FROM {db}.api_tokens FINAL "
            + where + " ORDER BY created_at DESC, id", params)
        return [_Row(Token(r["id"], r["kind"], r["name"], r["role"], r["parent"],
                           _parse_ch(r["created_at"]),  # type: ignore[arg-type]
                           r["created_by"], _parse_ch(r["expires_at"]),
                           _parse_ch(r["revoked_at"]), r["revoked_by"]), r["salt"], r["hash"])
                for r in rows]

    def _row(self, token_id: str, fresh: bool = False) -> _Row | None:
        now = time.monotonic()
        with self._lock:
            cached = self._rows.get(token_id)
        if cached is not None and not fresh and now - cached[0] < ROW_TTL:
            return cached[1]
        found = self._select("WHERE id = {id:String}", {"id": token_id})
        row = found[0] if found else None
        with self._lock:
            if len(self._rows) > 10_000:
                self._rows.clear()
            self._rows[token_id] = (now, row)
        return row

    def get(self, token_id: str) -> Token | None:
        row = self._row(token_id, fresh=True)
        return row.token if row else None

    def is_active(self, token_id: str) -> bool:
        """Whether a token (and, for a session, its API token) is still valid (cached rows:
        long-lived requests such as the SSE stream re-check this)."""
        row = self._row(token_id)
        now = self.clock()
        if row is None or row.token.state(now) != "active":
            return False
        if row.token.kind == "session":
            parent = self._row(row.token.parent)
            return parent is not None and parent.token.state(now) == "active"
        return True

    def list(self, kind: Kind | None = "api") -> list[Token]:
        if kind is None:
            return [r.token for r in self._select("", {})]
        return [r.token for r in self._select("WHERE kind = {kind:String}", {"kind": kind})]

    # -- verifying -------------------------------------------------------------------------

    def verify(self, presented: str, kind: Kind = "api") -> Token | None:
        """The active token ``presented`` is, or None (malformed, unknown, wrong secret,
        expired, revoked, or a session whose API token is no longer active)."""
        parsed = parse_token(presented)
        if parsed is None:
            return None
        token_id, secret = parsed
        row = self._row(token_id)
        if row is None or row.token.kind != kind:
            return None
        now = self.clock()
        if row.token.state(now) != "active":
            return None
        if kind == "session":
            parent = self._row(row.token.parent)
            if parent is None or parent.token.state(now) != "active":
                return None
        digest = hashlib.sha256(presented.encode("ascii")).digest()
        mono = time.monotonic()
        with self._lock:
            accepted = self._accepted.get(token_id)
        if accepted is not None and mono - accepted[0] < ACCEPT_TTL:
            return row.token if hmac.compare_digest(accepted[1], digest) else None
        try:
            salt = bytes.fromhex(row.salt)
        except ValueError:
            return None
        if not hmac.compare_digest(_hash(secret, salt), row.hash):
            return None
        with self._lock:
            if len(self._accepted) > 10_000:
                self._accepted.clear()
            self._accepted[token_id] = (mono, digest)
        return row.token
