"""User histories for serving: an interface plus the default SQLite (WAL) implementation.

The store holds *external* item ids, not internal ones, so it outlives a model: a re-trained run
with a different vocabulary can serve from the same store. Events are appended in arrival order
(`seq`), which is the order the model sees; timestamps are kept for time-aware models.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from seqrec.errors import SeqrecError


@dataclass
class StoredHistory:
    items: list[str]  # external ids, oldest first
    timestamps: list[float]


class HistoryStore(ABC):
    """What the service needs from a history store; a Redis store implements the same methods."""

    @abstractmethod
    def get(self, user: str, limit: int | None = None) -> StoredHistory | None:
        """The user's last `limit` interactions (all if None), or None for an unknown user."""

    def get_many(self, users: Sequence[str], limit: int | None = None) -> list[StoredHistory | None]:
        return [self.get(u, limit) for u in users]

    @abstractmethod
    def append(self, events: Sequence[tuple[str, str, float]]) -> None:
        """Append (user, item, timestamp) events atomically, in the given order."""

    @abstractmethod
    def num_users(self) -> int: ...

    @abstractmethod
    def users(self) -> list[str]:
        """Every user id with a history (for batch inference over the live store)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user_seq ON events (user, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SQLiteHistoryStore(HistoryStore):
    """Histories in one SQLite file in WAL mode: readers never block the writer, nothing is lost
    on restart once `append` returns (synchronous=NORMAL is durable across process crashes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SeqrecError(f"cannot create the store directory {self.path.parent}: {e}; pass --store PATH") from None
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        con = self._con()
        with con:
            con.executescript(_SCHEMA)

    def _con(self) -> sqlite3.Connection:
        """One connection per thread (sqlite3 connections must not be shared across threads)."""
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as e:
                raise SeqrecError(f"cannot open the history store {self.path}: {e}; pass another --store PATH") from None
            self._local.con = con
            self._all.append(con)
        return con

    # --- seeding -----------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._con().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def seed(self, rows: Iterable[tuple[str, str, float]], source: str) -> bool:
        """Load a run's histories once; later starts keep what the store has (events included)."""
        if self.meta("seeded_from") is not None:
            return False
        con = self._con()
        with self._write_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany("INSERT INTO events (user, item, ts) VALUES (?, ?, ?)", rows)
                con.execute("INSERT INTO meta VALUES ('seeded_from', ?)", (source,))
                con.execute("INSERT INTO meta VALUES ('seeded_at', ?)", (str(time.time()),))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return True

    # --- the interface -----------------------------------------------------------------------

    def get(self, user: str, limit: int | None = None) -> StoredHistory | None:
        rows = self._con().execute(
            "SELECT item, ts FROM events WHERE user = ? ORDER BY seq DESC LIMIT ?", (user, -1 if limit is None else limit)
        ).fetchall()
        if not rows:
            return None
        rows.reverse()
        return StoredHistory([r[0] for r in rows], [r[1] for r in rows])

    def append(self, events: Sequence[tuple[str, str, float]]) -> None:
        con = self._con()
        with self._write_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany("INSERT INTO events (user, item, ts) VALUES (?, ?, ?)", events)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def num_users(self) -> int:
        return int(self._con().execute("SELECT COUNT(DISTINCT user) FROM events").fetchone()[0])

    def users(self) -> list[str]:
        return [r[0] for r in self._con().execute("SELECT DISTINCT user FROM events ORDER BY user")]

    def close(self) -> None:
        for con in self._all:
            try:
                con.close()
            except sqlite3.Error:
                pass
        self._all.clear()
        self._local = threading.local()


class MemoryHistoryStore(HistoryStore):
    """A dict-backed store (tests, `--store :memory:`): same behaviour, nothing persisted."""

    def __init__(self):
        self._data: dict[str, StoredHistory] = {}
        self._lock = threading.Lock()

    def seed(self, rows: Iterable[tuple[str, str, float]], source: str) -> bool:
        self.append(list(rows))
        return True

    def get(self, user: str, limit: int | None = None) -> StoredHistory | None:
        h = self._data.get(user)
        if h is None:
            return None
        if limit is None:
            return StoredHistory(list(h.items), list(h.timestamps))
        return StoredHistory(h.items[-limit:], h.timestamps[-limit:])

    def append(self, events: Sequence[tuple[str, str, float]]) -> None:
        with self._lock:
            for user, item, ts in events:
                h = self._data.setdefault(user, StoredHistory([], []))
                h.items.append(item)
                h.timestamps.append(ts)

    def num_users(self) -> int:
        return len(self._data)

    def users(self) -> list[str]:
        return sorted(self._data)


def seed_rows(histories, vocab) -> Iterable[tuple[str, str, float]]:
    """(user, external item, timestamp) rows from a run's `Histories`, in history order."""
    for user, items, times in zip(histories.users, histories.items, histories.times, strict=True):
        names = vocab.decode(items)
        for name, ts in zip(names, times.tolist(), strict=True):
            yield user, name, ts


def open_store(path: str | Path, histories=None, vocab=None, source: str = "") -> HistoryStore:
    """Open (and on first use seed) the store at `path`; ':memory:' gives a non-persistent one."""
    store: HistoryStore = MemoryHistoryStore() if str(path) == ":memory:" else SQLiteHistoryStore(path)
    if histories is not None and vocab is not None:
        store.seed(seed_rows(histories, vocab), source)  # type: ignore[attr-defined]
    return store
