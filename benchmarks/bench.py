"""`make bench`: what linreg_exp costs on top of the bare tutorial, as side-by-side ratios.

Runs the questions in benchmarks/questions/ (all, or those named) and writes their rows to
benchmarks/results.md. Each ratio pairs two measurements of one repetition of this invocation,
the variants interleaved in rotating order (harness.py). What each question measures, how, its
targets and the latest figures: docs/performance.md.

    .venv/bin/python benchmarks/bench.py [--quick] [--only batched,startup] [--no-write]
    make bench [Q=batched] [BENCH_ARGS=--quick]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repo root is where `benchmarks` and
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `tests.support` are

from benchmarks.harness import RESULTS, Context, Row, load, progress, report

# question -> (its results.md sections, what it asks); run in this order, which shares the
# machine's state as the one-file bench did (the training loops first, the sweeps last).
QUESTIONS: dict[str, tuple[tuple[int, ...], str]] = {
    "loop": ((2,), "the trainer's epoch vs the eager tutorial loop and an analytic floor"),
    "minibatch": ((5,), "a mini-batch epoch vs DataLoader(TensorDataset, shuffle=True)"),
    "logging": ((3,), "the logging floor: the Session vs MlflowClient.log_batch; store rates"),
    "startup": ((1,), "a whole default run vs the bare tutorial script"),
    "sweeps": ((4,), "a 16-job grid as one sweep vs 16 processes"),
    "stopping": ((7,), "SIGTERM to exit of a long run"),
    "memory": ((6,), "peak RSS: a default run, a long run, 1e8 points"),
    "batched": ((8,), "batched sweeps vs the basic and joblib launchers"),
    "tables": ((9,), "a 10M-row x 10-feature CSV: read, split, 5 epochs; peak RSS"),
    "pruning": ((10,), "a batched 256-config grid with sweep.pruner=asha vs unpruned"),
    "optuna": ((11,), "32 TPE trials, median pruner: ours vs a hand-written optuna script"),
    "servers": ((12,), "a PostgreSQL-backed mlflow server at 1, 2, 4 writers vs the SQLite floor"),
}
MODULES = {"logging": "logging_floor", "optuna": "optuna_search"}  # not named as a library


def chosen(only: str) -> list[str]:
    """The questions named in --only (names or § numbers), in running order; all if none."""
    by_section = {s: name for name, (sections, _) in QUESTIONS.items() for s in sections}
    wanted: set[str] = set()
    for word in filter(None, (w.strip() for w in only.replace(" ", ",").split(","))):
        name = by_section.get(int(word)) if word.isdigit() else word
        if name not in QUESTIONS:
            allowed = ", ".join(QUESTIONS)
            print(
                f"bench: unknown question {word!r} (Q / --only): one of {allowed}", file=sys.stderr
            )
            raise SystemExit(2)
        wanted.add(name)
    return [name for name in QUESTIONS if not wanted or name in wanted]


def parse() -> argparse.Namespace:
    listing = "\n".join(
        f"  {name:<10} §{','.join(map(str, s))}: {what}" for name, (s, what) in QUESTIONS.items()
    )
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog=f"questions, in running order:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sizes")
    parser.add_argument(
        "--only", default="", help="comma-separated questions or § numbers, e.g. batched,2"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write results.md")
    return parser.parse_args()


def main() -> None:
    args = parse()
    names = chosen(args.only)
    started = time.perf_counter()
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_before = load()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="linreg-bench-") as tmp:
        ctx = Context(quick=args.quick, work=Path(tmp))
        for name in names:
            module = importlib.import_module(f"benchmarks.questions.{MODULES.get(name, name)}")
            progress(f"question {name}")
            rows += module.run(ctx)
    options = (" --quick" if args.quick else "") + (
        f" --only {','.join(names)}" if len(names) < len(QUESTIONS) else ""
    )
    text = report(
        rows,
        command=f"benchmarks/bench.py{options}",
        mode="quick" if args.quick else "full",
        stamp=stamp,
        minutes=(time.perf_counter() - started) / 60,
        load_before=load_before,
    )
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)
        progress(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
