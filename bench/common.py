"""Shared helpers for spark-ext benchmarks: timing, latency statistics, result tables, JSON.

Used by :mod:`bench.engine_bench` and meant for the later server and Spark benchmarks, so
everything here is engine-agnostic:

* :func:`time_each` / :func:`measure_latency` time one call per input with
  ``time.perf_counter_ns`` (the garbage collector paused, as :mod:`timeit` does) and
  :class:`LatencyStats` summarises the samples (p50/p90/p99/mean/min/max in microseconds);
* :func:`time_repeated` times a whole operation several times within a time budget;
* :func:`print_table` prints an aligned text table, :func:`markdown_table` the same rows
  as Markdown, :func:`write_json` writes results (plus :func:`machine_info`) under
  ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --- statistics ----------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of already sorted values, linear interpolation.

    Same definition as ``numpy.percentile(..., method="linear")``. Raises ValueError on
    an empty sequence.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in 0..100, got {p!r}")
    pos = (len(sorted_values) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latencies, in microseconds."""

    count: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    min_us: float
    max_us: float

    @classmethod
    def from_ns(cls, samples_ns: Iterable[int]) -> "LatencyStats":
        """Summarise nanosecond samples. Raises ValueError when there are none."""
        s = sorted(samples_ns)
        if not s:
            raise ValueError("no latency samples")
        us = [v / 1000.0 for v in s]
        return cls(
            count=len(us),
            p50_us=percentile(us, 50),
            p90_us=percentile(us, 90),
            p99_us=percentile(us, 99),
            mean_us=sum(us) / len(us),
            min_us=us[0],
            max_us=us[-1],
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# --- timing --------------------------------------------------------------------------


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect garbage, then keep the cyclic collector off for the block (as timeit does)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_each(fn: Callable[[T], Any], inputs: Sequence[T], warmup: int = 0, pause_gc: bool = True) -> list[int]:
    """Call ``fn(x)`` for every input and return each call's duration in nanoseconds.

    The first ``warmup`` inputs (cycled if needed) are called first and not recorded.
    """
    if warmup and inputs:
        for i in range(warmup):
            fn(inputs[i % len(inputs)])
    out: list[int] = []
    append = out.append
    clock = time.perf_counter_ns
    ctx = gc_paused() if pause_gc else _nullcontext()
    with ctx:
        for x in inputs:
            t0 = clock()
            fn(x)
            append(clock() - t0)
    return out


def measure_latency(fn: Callable[[T], Any], inputs: Sequence[T], warmup: int = 0, pause_gc: bool = True) -> LatencyStats:
    """:func:`time_each`, summarised."""
    return LatencyStats.from_ns(time_each(fn, inputs, warmup=warmup, pause_gc=pause_gc))


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (wall clock, perf_counter)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t0 = 0.0

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t0


def time_once(fn: Callable[[], T]) -> tuple[float, T]:
    """Run ``fn()`` once; returns (seconds, result)."""
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def time_repeated(
    fn: Callable[[], Any], min_reps: int = 1, max_reps: int = 5, budget_s: float = 3.0
) -> list[float]:
    """Time ``fn()`` at least ``min_reps`` times and at most ``max_reps`` times, stopping
    early once the elapsed total exceeds ``budget_s``. Returns the durations in seconds.
    """
    times: list[float] = []
    total = 0.0
    while len(times) < max_reps and (len(times) < min_reps or total < budget_s):
        gc.collect()
        dt, _ = time_once(fn)
        times.append(dt)
        total += dt
    return times


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return percentile(sorted(values), 50)


def rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc), or None where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# --- machine and versions ------------------------------------------------------------


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(packages: Sequence[str] = ()) -> dict[str, Any]:
    """Date, Python, OS, CPU count, total memory and the versions of ``packages``."""
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average": load_average(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_bytes": mem,
        "packages": {p: package_version(p) for p in packages},
    }


# --- formatting ----------------------------------------------------------------------


def fmt_num(v: float | int | None, digits: int = 3) -> str:
    """A compact human number: 1234567 -> '1.23M', 0.000123 -> '0.000123', None -> 'n/a'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    a = abs(v)
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.{digits}g}{suf}"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def fmt_bytes(n: float | int | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def advantage(ours: float | None, theirs: float | None, higher_is_better: bool) -> float | None:
    """How many times better ``ours`` is than ``theirs`` (>1: ours better), or None."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return ours / theirs if higher_is_better else theirs / ours


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def _cells(rows: Iterable[Sequence[Any]]) -> list[list[str]]:
    return [["" if c is None else str(c) for c in r] for r in rows]


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> str:
    """An aligned plain-text table: first column left-aligned, the others right-aligned."""
    body = _cells(rows)
    head = [str(h) for h in headers]
    widths = [len(h) for h in head]
    for r in body:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))

    out = []
    if title:
        out.append(title)
    out.append(line(head))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in body)
    return "\n".join(out)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    print(format_table(headers, rows, title), flush=True)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The same rows as a GitHub Markdown table (first column left, others right)."""
    body = _cells(rows)
    out = ["| " + " | ".join(str(h) for h in headers) + " |"]
    out.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|")
    out.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body)
    return "\n".join(out)


# --- results -------------------------------------------------------------------------


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_json(name: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``bench/results/<name>`` (or to a path that
    contains a directory part). Returns the path written."""
    p = Path(name)
    if p.parent == Path("."):
        p = RESULTS_DIR / p
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default, allow_nan=False) + "\n")
    tmp.replace(p)
    return p


def log(msg: str) -> None:
    """Progress line on stderr with elapsed wall time since import."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


_T0 = time.perf_counter()
