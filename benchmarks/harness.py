"""The bench's harness: timing, pairing, the results table and the report around it.

Every ratio divides two measurements taken in the same invocation and the same repetition; the
variants of a comparison run interleaved, their order rotating each repetition (`rotated`), so
a busy machine slows both sides alike. A question module returns `Row`s; the table gives each
row's median, its baseline's median and the median ratio with its min-max, and judges a target
on the median. What each question measures and why: docs/performance.md.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results.md"
GIB = 2**30
MIB = 2**20
T = TypeVar("T")


# ---------------------------------------------------------------- timing and pairing


def progress(text: str) -> None:
    """A time-stamped line on stderr: a full bench takes half an hour, say where it is."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def seconds_of(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def rotated(items: Sequence[T], rep: int) -> list[T]:
    """The variants in this repetition's order: each goes first in turn."""
    shift = rep % len(items)
    return [*items[shift:], *items[:shift]]


def size_label(n: int) -> str:
    return f"{n:.0e}".replace("e+0", "e")


@dataclass
class Context:
    """One invocation: its mode, its throw-away work dir, and the measurements questions share.

    Some measurements answer two questions (the whole-process runs give start-up times and peak
    memory; the long runs give stopping times and memory over time): `once` runs such a
    measurement the first time a question asks for it and hands the same result to the next,
    so `make bench` runs it once and `make bench Q=memory` still runs it.
    """

    quick: bool
    work: Path
    _shared: dict[str, Any] = field(default_factory=dict)

    def pick(self, full: T, quick: T) -> T:
        """The full or the quick sizes of a question."""
        return quick if self.quick else full

    def once(self, key: str, measure: Callable[[], T]) -> T:
        if key not in self._shared:
            self._shared[key] = measure()
        result: T = self._shared[key]
        return result

    def folder(self, name: str) -> Path:
        """A new directory under the work dir, for one question's stores and outputs."""
        path = self.work / name
        path.mkdir(parents=True)
        return path


# ---------------------------------------------------------------- the results table


@dataclass(frozen=True)
class Target:
    limit: float
    on_ratio: bool  # True: the median ratio must stay <= limit; False: the median of `ours`
    text: str


@dataclass
class Row:
    section: int
    measure: str
    ours: list[float]
    base: list[float]  # paired with `ours` by repetition; empty when there is no baseline
    unit: str
    target: Target | None = None
    note: str = ""

    @property
    def ratios(self) -> list[float]:
        return [o / b for o, b in zip(self.ours, self.base, strict=True)]

    def judged(self) -> float | None:
        if self.target is None:
            return None
        return statistics.median(self.ratios if self.target.on_ratio else self.ours)

    def met(self) -> bool | None:
        value = self.judged()
        return None if value is None or self.target is None else value <= self.target.limit

    def verdict(self) -> str:
        value, met = self.judged(), self.met()
        if value is None or met is None or self.target is None:
            return ""
        if met:
            spread = self.ratios if self.target.on_ratio else self.ours
            return "met" if max(spread) <= self.target.limit else "met (median; max over)"
        if self.target.limit == 0:  # an exact target (0: the same best): missed, no percentage
            return "**MISSED**"
        return f"**MISSED** by {100 * (value / self.target.limit - 1):.0f}%"

    def markdown(self) -> str:
        ours = _fmt(statistics.median(self.ours), self.unit)
        base = _fmt(statistics.median(self.base), self.unit) if self.base else ""
        if self.base:
            ratios = self.ratios
            ratio = (
                f"{statistics.median(ratios):.3g}x ({min(ratios):.3g}-{max(ratios):.3g}), "
                f"n={len(ratios)}"
            )
        else:
            ratio = f"n={len(self.ours)}"
        target = self.target.text if self.target else ""
        cells = [str(self.section), self.measure, ours, base, ratio, target, self.verdict()]
        return "| " + " | ".join([*cells, self.note]) + " |"


def _fmt(value: float, unit: str) -> str:
    return f"{value:.4g} {unit}" if value < 1e5 else f"{value:.3e} {unit}"


HEADER = (
    "| § | measure | ours (median) | baseline (median) | ratio: median (min-max) | target "
    "| verdict | note |\n|---|---|---|---|---|---|---|---|"
)


# ---------------------------------------------------------------- the report


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("torch", "mlflow", "hydra-core", "omegaconf", "numpy")
    )
    return (
        f"{cpu_model()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
        f"{memory:.0f} GiB RAM; Python {platform.python_version()}; {versions}"
    )


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def report(
    rows: list[Row], *, command: str, mode: str, stamp: str, minutes: float, load_before: str
) -> str:
    """results.md: when and where, the table (sorted by section), the missed targets."""
    rows = sorted(rows, key=lambda r: r.section)
    missed = [r for r in rows if r.met() is False]
    lines = [
        "# linreg_exp benchmark: framework cost against the bare tutorial",
        "",
        f"- Date: {stamp}; `{command}` ({mode} mode) took {minutes:.1f} min.",
        f"- Machine: {machine()}.",
        f"- Load average (1/5/15 min) at start: {load_before}; at end: {load()}. Other "
        "processes may have been running: every ratio pairs measurements of one repetition, "
        "the variants interleaved in rotating order.",
        "- Ratio = ours / baseline per repetition (lower is better for ours); median and "
        "min-max over n repetitions. Targets are judged on the median.",
        "- What each section measures and how: [docs/performance.md](../docs/performance.md).",
        "",
        HEADER,
        *(row.markdown() for row in rows),
        "",
        "Missed targets: "
        + (
            "; ".join(f"§{r.section} {r.measure} ({r.verdict().replace('**', '')})" for r in missed)
            if missed
            else "none"
        )
        + ".",
        "",
    ]
    return "\n".join(lines)
