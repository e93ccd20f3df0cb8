"""The jobs table the Jobs page pages through: held in memory, kept current by reading only what changed.

Why not one MongoDB query per page: SecantusDB reads every candidate document before it applies ``skip``
and ``limit`` (an index only changes the order), so a sorted page of 100,000 Orders costs seconds however
it is indexed, while a narrow index range costs milliseconds. So the table is read whole once (in the
background, as soon as the dashboard is created) and afterwards only what may have changed is read again
(``outcomes.table_rows``: narrow ranges of existing indexes); sorting, filtering and paging are pandas
operations on 100,000 rows, which take milliseconds. A full re-read every ``FULL_RELOAD_EVERY`` seconds
repairs what the incremental reads cannot see (a worker's clock far behind, a lost Job sent back to the
queue, deleted documents).

Until the first read is done (right after the HQ starts), the default view (newest first, no filter) is
answered straight from the store by ``outcomes.newest_rows``; any other view waits for it. A whole read
of 100,000 Orders takes tens of seconds, so the table is also saved in the HQ's home every few minutes:
a restarted HQ starts from that copy (plus what changed since) and re-reads everything in the background.
Page views never wait on the store once a table is held (a refresh in another thread is not waited for).

Over 400 lines because keeping one table current (reads, saved copy, per-version values) and answering
the grid's questions about it share its versioning and locks; split, each half would reach into the other.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlqueue import memory, order_index, orders, outcomes
from mlqueue.settings import Settings
from mlqueue.values import is_number

log = logging.getLogger(__name__)

BASE_COLUMNS = ["jobId", "state", "scriptName", "projectName", "sweepId", "trialNumber", "worker", "attempts",
                "createdDate", "startedDate", "finishedDate", "updatedDate", "durationSeconds", "epoch",
                "hasPredictions"]
DEFAULT_SORT = [{"colId": "createdDate", "sort": "desc"}]
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
REFRESH_AFTER = 1.0  # seconds a page request may be behind the store
OVERLAP = timedelta(seconds=5)  # re-read a little before the last read: writes in flight, small clock skew
FULL_RELOAD_EVERY = 1800.0
SAVE_EVERY = 300.0
SAVED_WAIT = 10.0  # seconds a page waits for the saved table after a restart (read in ~1-4 s at 100,000 Jobs)
FIRST_ROWS = 1000  # rows of the first read kept aside to serve the default view before the read is done
PREPARED_VALUES = ("state", "scriptName", "projectName", "sweepId")  # the Jobs page's quick filters
NUMBER_TESTS = {
    "equals": lambda s, v: s == v, "notEqual": lambda s, v: s != v, "lessThan": lambda s, v: s < v,
    "lessThanOrEqual": lambda s, v: s <= v, "greaterThan": lambda s, v: s > v,
    "greaterThanOrEqual": lambda s, v: s >= v,
}
TEXT_TESTS = {
    "contains": lambda s, v: s.str.contains(v, regex=False),
    "notContains": lambda s, v: ~s.str.contains(v, regex=False),
    "equals": lambda s, v: s == v, "notEqual": lambda s, v: s != v,
    "startsWith": lambda s, v: s.str.startswith(v), "endsWith": lambda s, v: s.str.endswith(v),
}


def column_kind(series: pd.Series, sample: int = 2000) -> str:
    """"number", "date", "bool" or "text": decides the grid's filter and how the column sorts."""
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "date"
    if pd.api.types.is_numeric_dtype(series):
        return "number"
    values = series.dropna().head(sample)
    if len(values) and values.map(is_number).all():
        return "number"
    return "text"


def _as_text(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.dt.strftime(DATE_FORMAT).astype("string")
    return series.astype("string")


def _condition_mask(series: pd.Series, model: dict[str, Any]) -> pd.Series:
    """Rows passing one AG Grid filter condition (text, number or date filter model)."""
    if model.get("operator") and model.get("conditions"):
        masks = [_condition_mask(series, c) for c in model["conditions"]]
        combined = masks[0]
        for mask in masks[1:]:
            combined = (combined & mask) if model["operator"] == "AND" else (combined | mask)
        return combined
    test = model.get("type")
    blank = series.isna() | (_as_text(series).fillna("") == "")
    if test == "blank":
        return blank
    if test == "notBlank":
        return ~blank
    if model.get("filterType") == "number":
        numbers = pd.to_numeric(series, errors="coerce")
        value = model.get("filter")
        if value is None:
            return pd.Series(True, index=series.index)
        if test == "inRange":
            return ((numbers >= value) & (numbers <= model.get("filterTo", value))).fillna(False)
        return NUMBER_TESTS.get(test, NUMBER_TESTS["equals"])(numbers, float(value)).fillna(False)
    value = str(model.get("filter") if model.get("filter") is not None else model.get("dateFrom") or "").lower()
    text = _as_text(series).str.lower()
    passed = TEXT_TESTS.get(test, TEXT_TESTS["contains"])(text, value)
    return passed.fillna(test in ("notContains", "notEqual")).astype(bool)


def _sort_key(series: pd.Series) -> pd.Series:
    kind = column_kind(series)
    if kind == "number":
        return pd.to_numeric(series, errors="coerce")
    if kind in ("date", "bool"):
        return series
    return series.astype("string").str.lower()


def _plain(value: Any) -> Any:
    """A cell as JSON: no NaN, no numpy or pandas types, dates as text."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, datetime):
        return value.strftime(DATE_FORMAT)
    if hasattr(value, "item"):
        return _plain(value.item())
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def snapshot_path(settings: Settings) -> Path:
    """Where the table of this store is saved between HQ runs (one file per store and database)."""
    key = hashlib.sha256(f"{settings.mongo_url}|{settings.mongo_db}".encode()).hexdigest()[:16]
    return Path(settings.home) / "dashboard" / f"jobs-table-{key}.pkl"


def _same_rows(new: pd.DataFrame, old: pd.DataFrame) -> bool:
    """Whether re-read rows say nothing new (running Jobs are re-read every time; most have not moved)."""
    if not new.index.isin(old.index).all():
        return False
    before = old.loc[new.index]
    for column in new.columns:
        if column not in before:
            if new[column].notna().any():
                return False
            continue
        if [_plain(v) for v in new[column]] != [_plain(v) for v in before[column]]:
            return False
    gone = [c for c in before.columns if c not in new.columns]
    return not before[gone].notna().any().any() if gone else True


def _distinct(series: pd.Series) -> set[Any]:
    return {_plain(v) for v in series.dropna().unique()} - {None}


def _newest_first(frame: pd.DataFrame) -> np.ndarray:
    """Row positions by ``createdDate`` then ``jobId``, newest first (the grid's default order)."""
    created = pd.to_datetime(frame["createdDate"], utc=True).to_numpy(dtype="datetime64[us]").astype(np.int64)
    ids = frame["jobId"].to_numpy(dtype=str)
    return np.lexsort((ids, created))[::-1]


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=BASE_COLUMNS)
    for column in BASE_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame.index = pd.Index(frame["jobId"].to_numpy(), name=None)  # unnamed: "jobId" stays a plain column
    return frame


class JobTable:
    """The jobs table of one store, shared by every request of one dashboard process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._frame: pd.DataFrame | None = None
        self._lock = threading.Lock()
        self._read_since: datetime | None = None
        self._checked = 0.0
        self._loaded_at = 0.0
        self._reloading = False
        self.full_reads = 0
        self._loader: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._saved_at = 0.0
        self._memos: dict[str, Any] = {}
        self._columns_cache: tuple[frozenset[str], list[tuple[str, str]]] | None = None
        self._values: dict[str, set[Any]] = {}  # column -> distinct values
        self._values_lock = threading.Lock()  # the values and the table version they were read from, together
        self._installed = threading.Event()
        self._first: tuple[pd.DataFrame, Any] | None = None  # the first windows of the first read (``_newest``)
        self._index_read: order_index.WholeRead | None = None  # the Orders index's read, shared with ours
        self.rows_read = 0  # by whole reads so far (the first one's progress, while ``ready`` is False)

    # ------------------------------------------------------------------ keeping current

    def start_loading(self) -> None:
        """Read the whole table in the background (once), so the first visitor need not wait for it."""
        with self._start_lock:  # not ``_lock``: that one is held for the whole read
            if self._loader is not None or self._frame is not None:
                return
            if not snapshot_path(self.settings).is_file():
                # a first start: both need every Order at once, so one read for both. Claimed here, not in
                # the thread: the HQ starts the index's own read right after this. (After a restart the
                # index reads on its own, a quarter of the table's read: the API's pages need it soon.)
                self._index_read = self._index_read or order_index.index_for(self.settings).share_read()
            self._loader = threading.Thread(target=self._load_quietly, name="mlqueue-dashboard-table", daemon=True)
        self._loader.start()

    def _load_quietly(self) -> None:
        try:
            self.frame()
            self.prepare()
        except Exception:  # noqa: BLE001 - the next request retries and shows the error
            log.exception("dashboard: could not read the jobs table")
            self._give_back_index_read()
        finally:
            self._loader = None

    def _give_back_index_read(self) -> None:
        """The Orders index's whole read, claimed for this table's and not done: the index reads it itself."""
        shared, self._index_read = self._index_read, None
        if shared is not None:
            order_index.index_for(self.settings).end_shared(None)

    def _full_read(self) -> tuple[pd.DataFrame, datetime]:
        """The whole table, read in windows (the most recently moved Orders first; the store answers other
        requests in between), each turned into a small frame at once: holding every row as a dict until
        the end made the read peak at ~760 MB at 100,000 Jobs. Until the first read is done, the first
        windows serve the default view (``_first``)."""
        started = orders.now()
        chunks: list[pd.DataFrame] = []
        first = not self.ready
        index = order_index.index_for(self.settings)
        shared, self._index_read = self._index_read, None  # the Orders index's read (``start_loading``)
        try:
            for rows in outcomes.table_row_windows(self.settings, also=shared.add if shared else None):
                chunks.append(_frame(rows))
                self.rows_read += len(rows)
                if first and (self._first is None or len(self._first[0]) < FIRST_ROWS):
                    if self._first is None:
                        log.info("dashboard: the newest %d rows read; they serve the first page until the whole "
                                 "table is read", len(rows))
                    self._first = self._complete_after(pd.concat(chunks))
        except BaseException:
            if shared is not None:
                index.end_shared(None)
            raise
        if shared is not None:
            index.end_shared(shared)
        frame = pd.concat(chunks) if len(chunks) > 1 else chunks[0] if chunks else _frame([])
        del chunks
        self._first = None
        memory.give_back()
        return frame, started

    @staticmethod
    def _complete_after(frame: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        """The first windows read, and the time after which every Job created is among them (the windows
        read the Orders by ``updatedDate``, newest first, and a Job is created before its Order moves)."""
        moved = pd.to_datetime(frame["updatedDate"], utc=True).dropna()
        return frame, (moved.min() if len(moved) else None)

    def _saved(self) -> tuple[pd.DataFrame, datetime] | None:
        """The table as the last HQ run saved it, or None (none saved, or unreadable by this pandas)."""
        path = snapshot_path(self.settings)
        if not path.is_file():
            return None
        try:
            saved = pd.read_pickle(path)
            return saved["frame"], saved["readSince"]
        except Exception:  # noqa: BLE001 - a bad copy only costs a full read
            log.warning("dashboard: ignoring the saved jobs table %s", path, exc_info=True)
            return None

    def _save_soon(self) -> None:
        """Save the current table in the background (called with ``_lock`` held, so the pair is consistent)."""
        frame, read_since, path = self._frame, self._read_since, snapshot_path(self.settings)
        self._saved_at = time.monotonic()

        def save() -> None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(f".{os.getpid()}.tmp")
                pd.to_pickle({"frame": frame, "readSince": read_since}, partial)
                os.replace(partial, path)
            except Exception:  # noqa: BLE001 - the copy is an optimisation
                log.warning("dashboard: could not save the jobs table to %s", path, exc_info=True)

        threading.Thread(target=save, name="mlqueue-dashboard-save", daemon=True).start()

    def _install(self, frame: pd.DataFrame, read_since: datetime, from_store: bool = True) -> None:
        """Serve this table from now on. A saved copy is trusted only until a full read replaces it."""
        with self._values_lock:
            self._frame, self._read_since = frame, read_since
            self._values = {}
        self._installed.set()
        self._checked = time.monotonic() - (0.0 if from_store else REFRESH_AFTER)
        self._loaded_at = time.monotonic() if from_store else -FULL_RELOAD_EVERY
        if from_store:
            self.full_reads += 1
            self._save_soon()

    def frame(self) -> pd.DataFrame:
        """The current table: read whole on first use, then patched with what changed (at most every second).

        While another thread reads the store for it (a refresh, or the saved copy being brought up to
        date), the version in hand is returned at once: right after an HQ restart the store is busy with
        every whole read of the start, and a refresh waited behind them for tens of seconds at 100,000
        Jobs, holding every page view with it.
        """
        if self._frame is not None:
            if not self._lock.acquire(blocking=False):
                return self._frame
        else:
            self._lock.acquire()
        try:
            if self._frame is None:
                started = time.perf_counter()
                saved = self._saved()
                if saved is not None:
                    self._install(*saved, from_store=False)
                    read = time.perf_counter() - started
                    self.prepare()  # served (and its first view computed) before it is brought up to date
                    log.info("dashboard: saved jobs table of %d rows read in %.1f s, its first view prepared in "
                             "%.1f s more", len(self._frame), read, time.perf_counter() - started - read)
                else:
                    self._install(*self._full_read())
                    log.info("dashboard: jobs table of %d rows read from the store in %.1f s", len(self._frame),
                             time.perf_counter() - started)
            if time.monotonic() - self._checked >= REFRESH_AFTER:
                self._refresh()
            if time.monotonic() - self._loaded_at >= FULL_RELOAD_EVERY and not self._reloading:
                self._reloading = True
                threading.Thread(target=self._reload, daemon=True).start()
            return self._frame
        finally:
            self._lock.release()

    def _await_saved(self) -> None:
        """Right after a restart, wait (a few seconds) for the saved table rather than ask the busy store."""
        if not self.ready and snapshot_path(self.settings).is_file():
            self.start_loading()
            self._installed.wait(SAVED_WAIT)

    def _refresh(self) -> None:
        started = orders.now()
        rows = outcomes.table_rows(self.settings, changed_since=self._read_since - OVERLAP)
        self._checked = time.monotonic()
        self._read_since = started
        changed = _frame(rows) if rows else None
        if changed is not None and not _same_rows(changed, self._frame):
            kept = self._frame.drop(index=changed.index, errors="ignore")
            with self._values_lock:
                self._frame = pd.concat([kept, changed]) if len(kept) else changed
                for column, found in self._values.items():
                    if column in changed:
                        found |= _distinct(changed[column])
        if time.monotonic() - self._saved_at >= SAVE_EVERY:
            self._save_soon()

    def _reload(self) -> None:
        try:
            frame, started = self._full_read()
            with self._lock:
                # Orders that changed while the full read ran are re-read at the next refresh (OVERLAP).
                self._install(frame, min(started, self._read_since or started))
            self.prepare()
        except Exception:  # noqa: BLE001 - keep serving the table we have
            log.exception("dashboard: full re-read of the jobs table failed")
        finally:
            self._reloading = False

    def prepare(self) -> None:
        """Compute in the background what the Jobs page's first view needs, so its first visitor does not
        wait for it (at 100,000 Jobs, seconds under load): the columns, the default order, the quick
        filters' values."""
        frame = self.frame()
        self.columns()
        self._positions(frame, None, None)
        for column in PREPARED_VALUES:
            self.values(column)

    @property
    def ready(self) -> bool:
        """Whether the whole table is in memory (never blocks)."""
        return self._frame is not None

    def _newest(self, n: int) -> pd.DataFrame:
        """The newest ``n`` rows while the table is being read: from its first windows once they hold
        them (a store busy with the start's reads answers a page late), else from the store."""
        self.start_loading()
        first = self._first
        if first is not None and first[1] is not None:
            frame, complete_after = first
            top = frame.take(_newest_first(frame)[:n])
            if len(top) == n and pd.Timestamp(top["createdDate"].iloc[-1]) >= complete_after:
                return top
        return _frame(outcomes.newest_rows(self.settings, n))

    # ------------------------------------------------------------------ questions the pages ask

    def _memo(self, frame: pd.DataFrame, name: str, compute: Any) -> Any:
        """A value derived from one version of the table, computed once per version.

        Page requests run in several threads, and a refresh may install a new version while one of them
        is still computing for the old one: each version's values live in their own dict, taken once
        here, so a value computed from an old version can never be stored as the new version's (it was:
        row positions of a table read before some Jobs finished kept being served after, until the
        table changed again, so finished Jobs stayed in the "unassigned" view).
        """
        memos = self._memos
        if memos.get("frame") is not frame:
            memos = {"frame": frame}
            if frame is self._frame:  # an old version's values are computed for this caller only
                self._memos = memos
        if name not in memos:
            memos[name] = compute()
        return memos[name]

    def memo(self, name: str, compute: Any) -> Any:
        """``compute(table)`` for the current version of the table, computed once per version (see ``_memo``)."""
        frame = self.frame()
        return self._memo(frame, name, lambda: compute(frame))

    def columns(self) -> list[tuple[str, str]]:
        """(column id, kind) for every column: Order columns, then ``outcome.*``, then ``job.*`` (most used first).

        While the table is still being read, the columns of the newest Jobs. Computed again only when the
        set of columns changes, not at every new version of the table (one a second while Jobs run: it
        took up to a second at 100,000 Jobs, on every page view).
        """
        self._await_saved()
        if not self.ready:
            return self._columns(self._newest(50))
        frame = self.frame()
        names = frozenset(frame.columns)
        cached = self._columns_cache
        if cached is None or cached[0] != names:
            cached = self._columns_cache = (names, self._columns(frame))
        return cached[1]

    def newest(self, filter_model: dict[str, Any] | None, n: int) -> pd.DataFrame:
        """The newest ``n`` rows passing the grid's filters (the positions are shared with the grid's pages)."""
        frame = self.frame()
        return frame.take(self._positions(frame, None, filter_model)[:n])

    @staticmethod
    def _columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
        filled = frame.count()
        outcome_cols = sorted((c for c in frame.columns if c.startswith("outcome.")),
                              key=lambda c: (c not in ("outcome.loss", "outcome.metric"), -filled[c], c))
        job_cols = sorted((c for c in frame.columns if c.startswith("job.")), key=lambda c: (-filled[c], c))
        return [(c, column_kind(frame[c])) for c in BASE_COLUMNS + outcome_cols + job_cols]

    def _positions(self, frame: pd.DataFrame, sort_model: list[dict[str, Any]] | None,
                   filter_model: dict[str, Any] | None) -> np.ndarray:
        """Row positions of the table filtered and sorted as the grid asks (AG Grid sort and filter models).

        Rows start in the default order (newest first) and are sorted stably, so ties stay newest first;
        only the sort keys of the rows that passed the filters are copied.
        """
        key = json.dumps([sort_model or [], filter_model or {}], sort_keys=True)
        cached = self._memo(frame, "orders", dict)
        if key in cached:
            return cached[key]
        order = self._memo(frame, "default", lambda: _newest_first(frame))
        keep = np.ones(len(frame), dtype=bool)
        for column, model in (filter_model or {}).items():
            if column in frame:
                keep &= _condition_mask(frame[column], model).to_numpy(dtype=bool)
        order = order[keep[order]]
        sorts = [s for s in (sort_model or []) if s.get("colId") in frame and s.get("sort") in ("asc", "desc")]
        if sorts and sorts != DEFAULT_SORT:
            keys = pd.DataFrame({f"k{i}": _sort_key(frame[s["colId"]].iloc[order]).to_numpy()
                                 for i, s in enumerate(sorts)})
            ranked = keys.sort_values(list(keys.columns), ascending=[s["sort"] == "asc" for s in sorts],
                                      na_position="last", kind="stable")
            order = order[ranked.index.to_numpy()]
        if len(cached) > 16:
            cached.clear()
        cached[key] = order
        return order

    def ordered(self, sort_model: list[dict[str, Any]] | None, filter_model: dict[str, Any] | None) -> pd.DataFrame:
        """The table filtered and sorted as the grid asks."""
        frame = self.frame()
        return frame.take(self._positions(frame, sort_model, filter_model))

    def page(self, start: int, end: int, sort_model: list[dict[str, Any]] | None = None,
             filter_model: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """Rows ``start``..``end`` of the ordered table, ready for the grid, and how many rows match.

        The count is None (not known yet) for the newest Jobs served while the table is still being read.
        """
        self._await_saved()
        if not self.ready and start == 0 and not filter_model and (sort_model or DEFAULT_SORT) == DEFAULT_SORT:
            newest = self._newest(end)
            records = [{k: _plain(v) for k, v in row.items()} for row in newest.to_dict("records")]
            return records, (len(records) if len(records) < end else None)
        frame = self.frame()
        order = self._positions(frame, sort_model, filter_model)
        chunk = frame.take(order[max(0, start):max(start, end)])
        records = [{k: _plain(v) for k, v in row.items()} for row in chunk.to_dict("records")]
        return records, len(order)

    def to_csv(self, columns: list[str], sort_model: list[dict[str, Any]] | None = None,
               filter_model: dict[str, Any] | None = None) -> str:
        """Every row matching the filters, in the grid's order, with the columns shown."""
        view = self.ordered(sort_model, filter_model)
        columns = [c for c in columns if c in view]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for row in view[columns].itertuples(index=False, name=None):
            writer.writerow(["" if (v := _plain(value)) is None else v for value in row])
        return buffer.getvalue()

    def values(self, column: str, limit: int = 500) -> list[Any]:
        """The distinct values of a column (for the quick filters); none while the table is being read.

        Read from the whole table once, then grown with each refresh's changed rows (a new version of
        the table comes every second while Jobs run; finding the values of 100,000 rows again each time
        took seconds under load). A value whose last Job is gone stays until the next full read.
        """
        if not self.ready:
            return []
        frame = self.frame()
        if column not in frame:
            return []
        with self._values_lock:
            if column not in self._values:
                self._values[column] = _distinct(self._frame[column]) if column in self._frame else set()
            found = set(self._values[column])   # a copy: a refresh in another thread grows the set in place
        return self._memo(frame, f"values:{column}", lambda: sorted(found, key=str)[:limit])

    def with_predictions(self, limit: int = 300) -> pd.DataFrame:
        """Finished Jobs whose Outcome carries predictions (trainer Outcomes), newest first."""
        frame = self.frame()
        picked = frame[frame["hasPredictions"].fillna(False).astype(bool)]
        return picked.sort_values("finishedDate", ascending=False, na_position="last").head(limit)

    def worker_stats(self) -> dict[str, dict[str, Any]]:
        """Per worker: Jobs finished, seconds spent on Jobs (the running one's so far) and the Job it runs now."""
        frame = self.frame()
        return self._memo(frame, "workers", lambda: self._worker_stats(frame))

    @staticmethod
    def _worker_stats(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
        mine = frame.dropna(subset=["worker"])
        if mine.empty:
            return {}
        worker = mine["worker"].astype(str)
        held = mine["state"].isin(orders.HELD)
        busy = pd.to_numeric(mine["durationSeconds"], errors="coerce").fillna(0.0)
        started = pd.to_datetime(mine["startedDate"], utc=True)
        running = held & started.notna()
        busy = busy.where(~running, (pd.Timestamp(orders.now()) - started).dt.total_seconds())
        done = mine["state"].isin(orders.FINAL).groupby(worker).sum()
        spent = busy.groupby(worker).sum()
        now_running = mine[held].assign(started=started[held]).sort_values("started", na_position="first")
        current = now_running.groupby(worker[held])["jobId"].last()
        return {name: {"jobsDone": int(done.get(name, 0)), "busySeconds": float(spent.get(name, 0.0)),
                       "currentJob": current.get(name)} for name in spent.index}
