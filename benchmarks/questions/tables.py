"""§9 tables: a run on a CSV of your own, 10 million rows by 10 features (issue #24): reading it,
splitting it and 5 epochs, whole process, with its peak RSS, against the bare tutorial script on
as many points (the same process shape: Python, torch, one table in memory).

The CSV is written by the bench (pyarrow's writer: seconds) into its work dir; quick mode uses
1 million rows. The largest table the default handles follows from the figure: data.py refuses a
file whose reading needs more than the memory available (READ_MEMORY_FACTOR x its size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.children import bare, cli, run_child, sqlite_env
from benchmarks.harness import GIB, MIB, Context, Row, Target, progress


@dataclass(frozen=True)
class Sizes:
    rows: int
    features: int = 10


FULL = Sizes(rows=10_000_000)
QUICK = Sizes(rows=1_000_000)


def write_csv(path: Path, rows: int, features: int) -> None:
    """y = x·w + 3 + noise on `features` uniform columns, written in blocks (bounded memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    weights = np.arange(1, features + 1, dtype=np.float64)
    block = 1_000_000
    names = [f"f{i}" for i in range(1, features + 1)]
    with pacsv.CSVWriter(str(path), pa.schema([(n, pa.float64()) for n in [*names, "y"]])) as out:
        for start in range(0, rows, block):
            count = min(block, rows - start)
            x = rng.uniform(-10, 10, (count, features)).round(4)
            y = (x @ weights + 3 + rng.normal(0, 1, count)).round(4)
            columns = {name: x[:, i] for i, name in enumerate(names)} | {"y": y}
            out.write_table(pa.table(columns))


def run(ctx: Context) -> list[Row]:
    sizes = ctx.pick(FULL, QUICK)
    root = ctx.folder("tables")
    csv = root / "big.csv"
    progress(f"9: writing a {sizes.rows:,} x {sizes.features} CSV")
    write_csv(csv, sizes.rows, sizes.features)
    size = csv.stat().st_size
    env = sqlite_env(root / "mlflow.db")
    log = root / "child.log"
    progress(f"9: data=csv on it, trainer.epochs=5 (and the bare script on {sizes.rows:,} points)")
    ours = run_child(
        cli(f"hydra.run.dir={root}/run", "data=csv", f"data.path={csv}", "data.target=y",
            "trainer.epochs=5", "plots.enabled=false", "mlflow.system_metrics=false"),
        root, env, log,
    )  # fmt: skip
    base = run_child(bare(str(sizes.rows), "5"), root, env, log)
    label = f"{sizes.rows / 1e6:g}M rows x {sizes.features} features"
    limit_gib = 24 / 3  # READ_MEMORY_FACTOR["csv"] on this 24 GiB machine: the file, at most
    return [
        Row(
            9,
            f"a CSV of {label} ({size / GIB:.2f} GiB): read, split and 5 epochs, whole process, "
            "vs the bare tutorial script on as many points",
            [ours.seconds],
            [base.seconds],
            "s",
            None,
            f"peak RSS {ours.peak_bytes / MIB:.0f} MiB ({ours.peak_bytes / size:.1f}x the file; "
            f"bare: {base.peak_bytes / MIB:.0f} MiB); the default refuses a CSV whose reading "
            f"needs more than the memory available: on this machine about {limit_gib:.0f} GiB "
            "of CSV",
        ),
        Row(
            9,
            f"a CSV of {label}: peak RSS of the run fits this 24 GiB machine",
            [ours.peak_bytes / GIB],
            [],
            "GiB",
            Target(24.0, False, "≤ 24 GiB"),
            f"{100 * ours.peak_bytes / (24 * GIB):.0f}% of 24 GiB",
        ),
    ]
