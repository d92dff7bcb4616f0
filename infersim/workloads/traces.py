"""Trace readers: production request logs as a RequestTable, and their replay options.

Formats (detected from the header or first row, or named explicitly):

- ``azure``: Azure LLM inference trace CSV, ``TIMESTAMP,ContextTokens,GeneratedTokens``;
  TIMESTAMP is a datetime string such as ``2023-11-16 18:15:46.6805900``.
- ``splitwise``: ``arrived_at,num_prefill_tokens,num_decode_tokens`` (seconds), the
  Splitwise paper's release of the Azure 2023 traces.
- ``jsonl``: one JSON object per line with ``arrival_time`` (epoch seconds),
  ``input_toks``, ``output_toks`` (a vLLM benchmark's per-request log).
- ``mooncake``: Mooncake's JSONL, ``timestamp`` (ms), ``input_length``, ``output_length``
  and ``hash_ids`` (ids of 512-token prefix blocks; kept in ``Trace.prefix_hashes``).

Arrivals are seconds after the first request, sorted (stable, so ties keep file order).
Columns are parsed vectorised; only when a row is bad does a slower pass find its line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from infersim.errors import ConfigError, TraceFormatError
from infersim.workloads.requests import RequestTable

TraceFormat = Literal["auto", "azure", "splitwise", "jsonl", "mooncake"]
LineOf = Callable[[int], int]  # 0-based data row -> 1-based line in the file
Columns = dict[str, pd.Series]

MOONCAKE_BLOCK_TOKENS = 512
"""Tokens per ``hash_ids`` block in the Mooncake trace release (kvcache-ai/Mooncake)."""


@dataclass(frozen=True)
class _Layout:
    """Where a format keeps arrival, prompt and output, and how arrival is written."""

    arrival: str
    prompt: str
    output: str
    kind: Literal["csv", "json"]
    time: Literal["datetime", "s", "ms"]


LAYOUTS: dict[str, _Layout] = {
    "azure": _Layout("TIMESTAMP", "ContextTokens", "GeneratedTokens", "csv", "datetime"),
    "splitwise": _Layout("arrived_at", "num_prefill_tokens", "num_decode_tokens", "csv", "s"),
    "jsonl": _Layout("arrival_time", "input_toks", "output_toks", "json", "s"),
    "mooncake": _Layout("timestamp", "input_length", "output_length", "json", "ms"),
}


@dataclass(frozen=True)
class Trace:
    """A parsed trace: the requests, plus per-request prefix-block hashes when the format
    has them (Mooncake), aligned with the rows of ``requests``."""

    requests: RequestTable
    format: str
    path: str
    prefix_hashes: tuple[np.ndarray, ...] | None = None
    prefix_block_tokens: int | None = None

    def take(self, rows: slice | np.ndarray) -> Trace:
        """The trace restricted to ``rows`` (a slice or index array), times unchanged."""
        r = self.requests
        hashes = self.prefix_hashes
        if hashes is not None:
            picked = range(len(r))[rows] if isinstance(rows, slice) else rows
            hashes = tuple(hashes[i] for i in picked)
        table = RequestTable(r.arrival_s[rows], r.prompt_tokens[rows], r.output_tokens[rows])
        return Trace(table, self.format, self.path, hashes, self.prefix_block_tokens)


def detect_format(path: str | Path) -> str:
    """The trace format of ``path``, from its CSV header or its first JSON object."""
    path = Path(path)
    line_no, first = _first_line(path)
    if first.startswith("{"):
        try:
            keys = set(json.loads(first))
        except (json.JSONDecodeError, TypeError) as exc:
            raise TraceFormatError(str(path), line_no, "row", f"not valid JSON: {exc}") from None
    else:
        keys = set(_split_header(first))
    for name, layout in LAYOUTS.items():
        if {layout.arrival, layout.prompt, layout.output} <= keys:
            return name
    expected = "; ".join(
        f"{n} ({lay.arrival}, {lay.prompt}, {lay.output})" for n, lay in LAYOUTS.items()
    )
    raise TraceFormatError(str(path), line_no, "header",
                           f"unrecognised trace format; expected the columns of {expected}")


def load_trace(
    path: str | Path,
    format: TraceFormat = "auto",
    *,
    rate_scale: float = 1.0,
    start_s: float = 0.0,
    end_s: float | None = None,
    max_requests: int | None = None,
) -> Trace:
    """Read a trace and apply the replay options (see :func:`replay`). Parsed files are
    cached by path, size and modification time, so sweeps re-read nothing; the cached
    columns are read-only, so copy them before changing them in place."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("trace.path", str(path), "no such file")
    if format == "auto":
        format = detect_format(path)
    elif format not in LAYOUTS:
        raise ConfigError("trace.format", format, f"one of auto, {', '.join(LAYOUTS)}")
    stat = path.stat()
    trace = _parse_cached(str(path.resolve()), format, stat.st_size, stat.st_mtime_ns)
    return replay(trace, rate_scale=rate_scale, start_s=start_s, end_s=end_s,
                  max_requests=max_requests)


def read_trace(path: str | Path, format: TraceFormat = "auto", **replay_options: float | None,
               ) -> RequestTable:
    """The requests of a trace (``load_trace(...).requests``)."""
    return load_trace(path, format, **replay_options).requests


def replay(
    trace: Trace,
    *,
    rate_scale: float = 1.0,
    start_s: float = 0.0,
    end_s: float | None = None,
    max_requests: int | None = None,
) -> Trace:
    """Keep requests arriving in ``[start_s, end_s)`` (trace seconds), shift them so the
    window opens at t = 0, divide times by ``rate_scale`` (2.0 = twice the request rate),
    then keep the first ``max_requests``."""
    if not (math.isfinite(rate_scale) and rate_scale > 0):
        raise ConfigError("trace.rate_scale", rate_scale, "a finite number > 0")
    if not (math.isfinite(start_s) and start_s >= 0):
        raise ConfigError("trace.start_s", start_s, "a finite number >= 0")
    if end_s is not None and not end_s > start_s:
        raise ConfigError("trace.end_s", end_s, f"a number > start_s ({start_s})")
    if max_requests is not None and max_requests < 1:
        raise ConfigError("num_requests", max_requests, "an integer >= 1")
    arrival = trace.requests.arrival_s
    lo = int(np.searchsorted(arrival, start_s, side="left"))
    hi = len(arrival) if end_s is None else int(np.searchsorted(arrival, end_s, side="left"))
    if max_requests is not None:
        hi = min(hi, lo + max_requests)
    if hi <= lo:
        raise ConfigError("trace", (start_s, end_s),
                          f"the window holds no requests; the trace spans 0 to "
                          f"{trace.requests.duration_s:.3f} s")
    if (lo, hi, start_s, rate_scale) == (0, len(arrival), 0.0, 1.0):
        return trace
    out = trace.take(slice(lo, hi))
    r = out.requests
    shifted = RequestTable((r.arrival_s - start_s) / rate_scale, r.prompt_tokens,
                           r.output_tokens)
    return Trace(shifted, out.format, out.path, out.prefix_hashes, out.prefix_block_tokens)


# --- parsing ----------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _parse_cached(path: str, format: str, size: int, mtime_ns: int) -> Trace:
    return _parse(Path(path), format)


def _parse(path: Path, format: str) -> Trace:
    layout = LAYOUTS[format]
    hashes: tuple[np.ndarray, ...] | None = None
    if layout.kind == "csv":
        raw, line_of = _read_csv(path, layout)
    else:
        raw, line_of, rows = _read_jsonl(path, layout)
    arrival = _arrival_seconds(raw[layout.arrival], layout.time)
    prompt = _to_float(raw[layout.prompt])
    output = _to_float(raw[layout.output])
    if not len(arrival):
        raise TraceFormatError(str(path), 2 if layout.kind == "csv" else 1, "row",
                               "the file holds no requests")
    time_kind = "datetime" if layout.time == "datetime" else "time"
    _check(path, line_of, [(layout.arrival, raw[layout.arrival], arrival, time_kind),
                           (layout.prompt, raw[layout.prompt], prompt, "tokens"),
                           (layout.output, raw[layout.output], output, "tokens")])
    if format == "mooncake":
        hashes = _hash_ids(path, rows, line_of)
    arrival = arrival - arrival.min()
    prompt, output = prompt.astype(np.int64), output.astype(np.int64)
    if np.any(np.diff(arrival) < 0):
        order = np.argsort(arrival, kind="stable")
        arrival, prompt, output = arrival[order], prompt[order], output[order]
        if hashes is not None:
            hashes = tuple(hashes[i] for i in order)
    for column in (arrival, prompt, output):
        column.flags.writeable = False  # shared through the cache
    return Trace(RequestTable(arrival, prompt, output), format, str(path), hashes,
                 MOONCAKE_BLOCK_TOKENS if hashes is not None else None)


def _first_line(path: Path) -> tuple[int, str]:
    with open(path, encoding="utf-8-sig") as f:
        for no, text in enumerate(f, 1):
            if text.strip():
                return no, text.strip()
    raise TraceFormatError(str(path), 1, "header", "the file is empty")


def _split_header(line: str) -> list[str]:
    return [c.strip().strip('"').strip() for c in line.split(",")]


def _read_csv(path: Path, layout: _Layout) -> tuple[Columns, LineOf]:
    header_no, header = _first_line(path)
    columns = _split_header(header)
    for name in (layout.arrival, layout.prompt, layout.output):
        if name not in columns:
            raise TraceFormatError(str(path), header_no, name,
                                   f"column missing from the header {header!r}")
    try:
        frame = pd.read_csv(path, skipinitialspace=True, encoding="utf-8-sig",
                            dtype={layout.arrival: str} if layout.time == "datetime" else None)
    except pd.errors.ParserError as exc:
        line = _parser_error_line(str(exc))
        raise TraceFormatError(str(path), line, "row", str(exc).strip()) from None

    def line_of(row: int) -> int:
        seen = -1  # the header is the first non-blank line
        with open(path, encoding="utf-8-sig") as f:
            for no, text in enumerate(f, 1):
                if text.strip():
                    if seen == row:
                        return no
                    seen += 1
        return 0

    return {c: frame[c] for c in frame.columns}, line_of


def _parser_error_line(message: str) -> int:
    words = message.replace(",", " ").split()
    for i, word in enumerate(words[:-1]):
        if word == "line" and words[i + 1].isdigit():
            return int(words[i + 1])
    return 0


def _read_jsonl(path: Path, layout: _Layout) -> tuple[Columns, LineOf, list[dict]]:
    rows: list[dict] = []
    lines: list[int] = []
    with open(path, encoding="utf-8-sig") as f:
        for no, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceFormatError(str(path), no, "row", f"not valid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise TraceFormatError(str(path), no, "row", "not a JSON object")
            rows.append(row)
            lines.append(no)
    raw = {c: pd.Series([r.get(c) for r in rows], dtype=object)
           for c in (layout.arrival, layout.prompt, layout.output)}
    return raw, lines.__getitem__, rows


def _hash_ids(path: Path, rows: list[dict], line_of: LineOf) -> tuple[np.ndarray, ...]:
    try:
        return tuple(np.asarray(r.get("hash_ids") or (), dtype=np.int64) for r in rows)
    except (TypeError, ValueError):
        for i, r in enumerate(rows):
            try:
                ids = np.asarray(r.get("hash_ids") or (), dtype=np.int64)
                assert ids.ndim == 1
            except (TypeError, ValueError, AssertionError):
                raise TraceFormatError(str(path), line_of(i), "hash_ids",
                                       "not a list of integers") from None
        raise


def _to_float(raw: pd.Series) -> np.ndarray:
    if raw.dtype.kind in "iuf":
        return raw.to_numpy(dtype=np.float64)
    return pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _arrival_seconds(raw: pd.Series, unit: str) -> np.ndarray:
    """Arrival times in seconds on the trace's own clock (NaN where unreadable)."""
    if unit != "datetime":
        seconds = _to_float(raw)
        return seconds / 1000.0 if unit == "ms" else seconds
    stamps = pd.to_datetime(raw, format="ISO8601", errors="coerce")
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    valid = stamps.notna().to_numpy()
    out = np.full(len(ns), np.nan)
    if valid.any():
        out[valid] = (ns[valid] - ns[valid].min()) / 1e9
    return out


def _check(path: Path, line_of: LineOf,
           fields: list[tuple[str, pd.Series, np.ndarray, str]]) -> None:
    """Raise TraceFormatError for the first bad row: missing or unreadable values,
    negatives, and token counts that are zero or not whole numbers. ``fields`` holds
    (name, raw column, parsed values, kind) with kind "time", "datetime" or "tokens"."""
    first: tuple[int, int, str] | None = None  # (row, field order, problem)
    for order, (_name, raw, values, kind) in enumerate(fields):
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values < 0)
            if kind == "tokens":
                bad |= (values < 1) | (values != np.floor(values))
        if not bad.any():
            continue
        row = int(np.argmax(bad))
        if first is not None and (row, order) >= first[:2]:
            continue
        value, given = values[row], raw.iloc[row]
        if given is None or (not isinstance(given, str) and pd.isna(given)):
            problem = "missing value"
        elif not np.isfinite(value):
            problem = f"not a {'datetime' if kind == 'datetime' else 'number'}: {given!r}"
        elif value < 0:
            problem = f"negative value {given!r}"
        elif value < 1:
            problem = f"token count {given!r} must be >= 1"
        else:
            problem = f"token count {given!r} is not a whole number"
        first = (row, order, problem)
    if first is not None:
        row, order, problem = first
        raise TraceFormatError(str(path), line_of(row), fields[order][0], problem)
