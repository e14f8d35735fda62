"""The curation manifest: one SQLite row per (item, stage) with its status, outputs, reason and timing.

Items are raw videos (stage `filter`) and the clips cut from them (`caption`, `tryoff`, `tryon`, and `write`:
the data set part the clip went into). A stage's row is written once, when the stage finishes for that item, in
one transaction with any clips it creates, so a run killed at any point resumes from the last finished rows and
never records an item twice. Statuses:
- `done`: outputs (JSON) are the stage's results;
- `rejected`: the item failed a check; `reason` says which (the item goes no further);
- `error`: the stage could not finish (a server down after its retries, an unreadable file); `reason` says why.
  Errors are tried again on the next run; rejections are not.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time

STATUSES = ("done", "rejected", "error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,           -- video | clip
    parent TEXT,                  -- a clip's source video
    info TEXT NOT NULL            -- JSON: path, frame range, fps, ...
);
CREATE TABLE IF NOT EXISTS stages (
    item TEXT NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    outputs TEXT NOT NULL,        -- JSON
    reason TEXT NOT NULL,
    seconds REAL NOT NULL,
    finished REAL NOT NULL,       -- unix time
    PRIMARY KEY (item, stage)
);
"""


class Manifest:
    """Thread-safe access to `<work_dir>/manifest.sqlite` (WAL journal; one connection behind a lock)."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_items(self, items: list[tuple[str, str, str | None, dict]]) -> None:
        """Register (id, kind, parent, info) items; ones already known are left as they are."""
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?)",
                                 [(i, k, p, json.dumps(info)) for i, k, p, info in items])

    def finish(self, item: str, stage: str, status: str, outputs: dict | None = None, reason: str = "",
               seconds: float = 0.0, new_items: list[tuple[str, str, str | None, dict]] = (),
               new_rows: list[tuple[str, str, str, dict, str]] = ()) -> None:
        """Record a stage's end for an item (replacing an earlier `error`), together with the items it made and
        their own rows (item, stage, status, outputs, reason), in one transaction."""
        rows = [(item, stage, status, outputs or {}, reason, seconds)] + [(*r, 0.0) for r in new_rows]
        self._record(rows, new_items)

    def finish_all(self, stage: str, rows: list[tuple[str, str, dict]]) -> None:
        """Record `stage`'s end for many items, (item, status, outputs) each, in one transaction."""
        self._record([(item, stage, status, outputs, "", 0.0) for item, status, outputs in rows], ())

    def _record(self, rows: list[tuple], new_items) -> None:
        for row in rows:
            if row[2] not in STATUSES:
                raise ValueError(f"status must be one of {STATUSES}, got {row[2]!r} for {row[0]}")
        now = time.time()
        with self._lock:
            with self._db:  # one transaction
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?)",
                                     [(i, k, p, json.dumps(info)) for i, k, p, info in new_items])
                self._db.executemany("INSERT OR REPLACE INTO stages VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     [(i, st, status, json.dumps(out), why, sec, now)
                                      for i, st, status, out, why, sec in rows])

    def todo(self, kind: str, stage: str, after: str | None) -> list[tuple[str, dict]]:
        """Items of `kind` whose `after` stage is done (any, if None) and whose `stage` is not finished
        (no row, or an `error` row to try again)."""
        query = ("SELECT i.id, i.info FROM items i LEFT JOIN stages s ON s.item = i.id AND s.stage = ? "
                 "WHERE i.kind = ? AND (s.status IS NULL OR s.status = 'error')")
        args: list = [stage, kind]
        if after is not None:
            query += " AND EXISTS (SELECT 1 FROM stages p WHERE p.item = i.id AND p.stage = ? AND p.status = 'done')"
            args.append(after)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY i.id", args).fetchall()
        return [(i, json.loads(info)) for i, info in rows]

    def done(self, stage: str) -> list[tuple[str, dict, dict]]:
        """(id, info, outputs) of items whose `stage` is done."""
        with self._lock:
            rows = self._db.execute(
                "SELECT i.id, i.info, s.outputs FROM items i JOIN stages s ON s.item = i.id "
                "WHERE s.stage = ? AND s.status = 'done' ORDER BY i.id", (stage,)).fetchall()
        return [(i, json.loads(info), json.loads(out)) for i, info, out in rows]

    def rows(self, status: str | None = None) -> list[dict]:
        """Every stage row (optionally of one status) with its item's id and kind."""
        query = ("SELECT s.item, i.kind, s.stage, s.status, s.outputs, s.reason, s.seconds FROM stages s "
                 "LEFT JOIN items i ON i.id = s.item")
        args: tuple = ()
        if status is not None:
            query += " WHERE s.status = ?"
            args = (status,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY s.stage, s.item", args).fetchall()
        keys = ("item", "kind", "stage", "status", "outputs", "reason", "seconds")
        return [dict(zip(keys, r), outputs=json.loads(r[4])) for r in rows]
