"""`make bench`: what linreg_exp costs on top of the bare tutorial, as side-by-side ratios.

Every ratio divides two measurements taken in this same invocation, in the same repetition;
the variants of a comparison run interleaved (their order rotates each repetition), so a busy
machine slows both sides alike. The table gives the median ratio and its min-max over the
repetitions; a target is judged on the median. Writes benchmarks/results.md.

    .venv/bin/python benchmarks/bench.py [--quick] [--only 1,2,...] [--no-write]

Sections: 1 whole process (default run vs benchmarks/bare_tutorial.py), 2 training loop per
epoch, 3 MLflow logging of one run's history, 4 a 16-job lr grid, 5 mini-batch epochs,
6 peak memory. Child processes get a throw-away sqlite store and output dirs in a temp dir.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import importlib.metadata
import io
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from linreg_exp.data import Dataset, make_dataset
from linreg_exp.history import History
from linreg_exp.schema import DataConfig
from linreg_exp.train import fit, set_cpu_threads

REPO = Path(__file__).resolve().parent.parent
BARE = REPO / "benchmarks" / "bare_tutorial.py"
RESULTS = REPO / "benchmarks" / "results.md"
PYTHON = sys.executable
MLFLOW_CLI = Path(sys.executable).with_name("mlflow")
LR = 0.01
GIB = 2**30
MIB = 2**20
T = TypeVar("T")


@dataclass(frozen=True)
class Mode:
    name: str
    reps: int  # section 2
    process_reps: int  # section 1 (each repetition: bare, plots on, plots off)
    new_store_reps: int  # section 1, runs on a new store (one a repetition, the first ones)
    loop_sizes: tuple[tuple[int, int], ...]  # section 2: (num_data, epochs)
    log_sample: int  # section 3: per-value calls timed, scaled to all 1500 values
    log_reps: int  # section 3
    mini_batch_reps: int
    mini_batch_epochs: int
    grid_jobs: int
    grid_reps: int
    big_points: int  # section 6


FULL = Mode(
    name="full",
    reps=5,
    process_reps=12,
    new_store_reps=2,
    loop_sizes=((1_000, 500), (100_000, 100), (1_000_000, 20), (10_000_000, 5)),
    log_sample=300,
    log_reps=9,
    mini_batch_reps=2,
    mini_batch_epochs=2,
    grid_jobs=16,
    grid_reps=2,
    big_points=100_000_000,
)
QUICK = Mode(
    name="quick",
    reps=2,
    process_reps=2,
    new_store_reps=1,
    loop_sizes=((1_000, 200), (100_000, 50), (1_000_000, 10)),
    log_sample=60,
    log_reps=2,
    mini_batch_reps=1,
    mini_batch_epochs=1,
    grid_jobs=4,
    grid_reps=1,
    big_points=20_000_000,  # above baseline.LAD_MAX_POINTS, as 1e8 is
)


# ---------------------------------------------------------------- results table


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


# ---------------------------------------------------------------- child processes


@dataclass(frozen=True)
class Child:
    seconds: float
    peak_bytes: int  # ru_maxrss of the child (the largest of it and the children it reaped)


def child_env(tracking_uri: str | None) -> dict[str, str]:
    """This environment without MLFLOW_* / HYDRA_* settings, plus the given tracking store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


# Linux records the memory a process had before exec in its ru_maxrss, and subprocess spawns with
# vfork: a child started straight from this (large) process would report at least this process's
# peak. So children start from a small launcher that times them and reports its children's
# rusage (checked: the bare script reads 300 MiB this way, as /usr/bin/time says; 910 MiB when
# forked from a parent holding 800 MB).
_LAUNCHER = """
import resource, subprocess, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
code = subprocess.call(argv)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
with open(report, "w") as out:
    out.write(f"{seconds} {peak} {code}")
"""


def run_child(args: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> Child:
    """Wall seconds and peak RSS (ru_maxrss) of one child process; raise if it fails."""
    report = log.with_suffix(".report")
    with log.open("wb") as out:
        subprocess.run(
            [PYTHON, "-S", "-c", _LAUNCHER, str(report), *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            check=False,
        )
    try:
        seconds, peak, code = report.read_text().split()
        report.unlink()
    except (OSError, ValueError):
        seconds, peak, code = "nan", "0", "-1"
    if int(code) != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(args)} exited {code}:\n{tail}")
    return Child(float(seconds), int(peak))


def companion_peak_mib(args: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    """Peak RSS of a single run's MLflow companion process (ru_maxrss above reports only the
    largest process, the job), read from /proc while the run goes on."""
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peak_kib = 0
    while process.poll() is None:
        for status in Path("/proc").glob("[0-9]*/status"):
            with suppress(OSError):
                cmdline = (status.parent / "cmdline").read_bytes()
                if b"linreg_exp.companion" in cmdline:
                    for line in status.read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            peak_kib = max(peak_kib, int(line.split()[1]))
        time.sleep(0.05)
    return peak_kib / 1024


def cli(*overrides: str) -> list[str]:
    return [PYTHON, "-m", "linreg_exp", *overrides]


def rotated(items: Sequence[T], rep: int) -> list[T]:
    """The variants in this repetition's order: each goes first in turn."""
    shift = rep % len(items)
    return [*items[shift:], *items[:shift]]


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- 1 and 6: whole process


def whole_process(mode: Mode, work: Path) -> list[Row]:
    root = work / "process"
    root.mkdir()
    env = child_env(f"sqlite:///{root / 'warm' / 'mlflow.db'}")
    bare = [PYTHON, str(BARE)]
    log = root / "child.log"
    progress("1: warming up the store (first run creates its schema) and the page cache")
    run_child(cli(f"hydra.run.dir={root}/warmup"), root, env, log)
    run_child(bare, root, env, log)

    def linreg(name: str, rep: int, *extra: str, store_env: dict[str, str] = env) -> Child:
        return run_child(cli(f"hydra.run.dir={root}/{name}{rep}", *extra), root, store_env, log)

    results: dict[str, list[Child]] = {"bare": [], "plots": [], "noplots": [], "new": []}
    new_bare: list[Child] = []
    for rep in range(mode.process_reps):
        progress(f"1: repetition {rep + 1}/{mode.process_reps}")
        variants: list[tuple[str, Callable[[], Child]]] = [
            ("bare", lambda: run_child(bare, root, env, log)),
            ("plots", functools.partial(linreg, "plots", rep)),
            ("noplots", functools.partial(linreg, "noplots", rep, "plots.enabled=false")),
        ]
        if rep < mode.new_store_reps:
            new_env = child_env(f"sqlite:///{root / f'new{rep}' / 'mlflow.db'}")
            variants.append(("new", functools.partial(linreg, "new", rep, store_env=new_env)))
        for name, run in rotated(variants, rep):
            results[name].append(run())
        if rep < mode.new_store_reps:
            new_bare.append(results["bare"][-1])

    companion_mib = companion_peak_mib(cli(f"hydra.run.dir={root}/companion"), root, env)

    def secs(name: str) -> list[float]:
        return [c.seconds for c in results[name]]

    def mib(children: list[Child]) -> list[float]:
        return [c.peak_bytes / MIB for c in children]

    schema = statistics.median(secs("new")) - statistics.median(secs("plots")[: len(new_bare)])
    return [
        Row(
            1,
            "default run (plots on) vs bare tutorial script, whole process",
            secs("plots"),
            secs("bare"),
            "s",
            Target(1.5, True, "≤ 1.5x"),
            "warm sqlite store",
        ),
        Row(
            1,
            "default run, plots.enabled=false vs bare tutorial script",
            secs("noplots"),
            secs("bare"),
            "s",
            Target(1.3, True, "≤ 1.3x"),
            "warm sqlite store",
        ),
        Row(
            1,
            "default run (plots on) on a NEW store vs bare tutorial script",
            secs("new"),
            [c.seconds for c in new_bare],
            "s",
            None,
            f"schema creation adds ≈ {schema:.2f} s",
        ),
        Row(
            6,
            "peak RSS: default run (plots on) vs bare tutorial script",
            mib(results["plots"]),
            mib(results["bare"]),
            "MiB",
            None,
            f"plots off: {statistics.median(mib(results['noplots'])):.0f} MiB; the job process"
            f" only: its MLflow companion process peaks at {companion_mib:.0f} MiB beside it",
        ),
    ]


def big_memory(mode: Mode, work: Path, small_run_mib: float | None) -> list[Row]:
    """Peak RSS of a run with mode.big_points points (3 epochs) against the bare script's."""
    root = work / "big"
    root.mkdir()
    n = mode.big_points
    env = child_env(f"sqlite:///{root / 'mlflow.db'}")
    log = root / "child.log"
    progress(f"6: data.num_data={n} trainer.epochs=3 (and the bare script at {n})")
    ours = run_child(
        cli(
            f"hydra.run.dir={root}/run",
            f"data.num_data={n}",
            "trainer.epochs=3",
            "plots.enabled=false",
        ),
        root,
        env,
        log,
    )
    bare = run_child([PYTHON, str(BARE), str(n), "3"], root, env, log)
    per_point = ours.peak_bytes / n
    marginal = (
        f"; ≈ {(ours.peak_bytes - small_run_mib * MIB) / n:.1f} above a 1e3-point run"
        if small_run_mib is not None
        else ""
    )
    budget = 24 * GIB
    projected = float(ours.peak_bytes)
    if n < 100_000_000:  # the fixed part (a 1e3-point run) plus the per-point part, scaled
        fixed = (small_run_mib or 0.0) * MIB
        projected = fixed + (ours.peak_bytes - fixed) * 100_000_000 / n
    label = f"{n:.0e}".replace("+0", "")
    rows = [
        Row(
            6,
            f"peak RSS, {label} points, 3 epochs: linreg_exp vs bare tutorial script",
            [ours.peak_bytes / MIB],
            [bare.peak_bytes / MIB],
            "MiB",
            None,
            f"{per_point:.1f} bytes a point (bare: {bare.peak_bytes / n:.1f}){marginal}; "
            f"wall {ours.seconds:.1f} s vs {bare.seconds:.1f} s",
        ),
        Row(
            6,
            "1e8 points fit in 24 GiB: peak RSS"
            + ("" if n >= 100_000_000 else f" (projected from {label})"),
            [projected / GIB],
            [],
            "GiB",
            Target(24.0, False, "≤ 24 GiB"),
            f"{100 * projected / budget:.0f}% of 24 GiB",
        ),
    ]
    return rows


# ---------------------------------------------------------------- 2: the training loop


def eager_loop(x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """The tutorial's loop, written by hand."""
    torch.manual_seed(0)
    model, loss_fn = nn.Linear(1, 1), nn.L1Loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()


def analytic_floor(x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """The L1 gradient by hand on raw tensors: no autograd, no module, no optimizer."""
    w, b = torch.zeros(()), torch.zeros(())
    for _ in range(epochs):
        r = w * x + b - y
        s = r.sign()
        loss = r.abs().mean()
        gw = (s * x).mean()
        gb = s.mean()
        w -= LR * gw
        b -= LR * gb
        loss.item()


def project_fit(
    x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int | None = None
) -> History:
    sgd = functools.partial(torch.optim.SGD, lr=LR)
    return fit(Dataset(x, y), nn.L1Loss(), sgd, epochs, batch_size, 0, History())


def seconds_of(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def size_label(n: int) -> str:
    return f"{n:.0e}".replace("e+0", "e")


def training_loop(mode: Mode) -> list[Row]:
    rows: list[Row] = []
    for num_data, epochs in mode.loop_sizes:
        progress(f"2: training loop, num_data={num_data}, {epochs} epochs x {mode.reps}")
        data = make_dataset(DataConfig(num_data=num_data), seed=0)
        x, y = data.x, data.y
        set_cpu_threads(num_data)  # as run_experiment does, for every variant
        step = getattr(project_fit(x, y, 2), "step", "autograd")  # warm-up (torch._dynamo)
        eager_loop(x, y, 2)
        analytic_floor(x, y, 2)
        times: dict[str, list[float]] = {"fit": [], "eager": [], "floor": []}
        variants: list[tuple[str, Callable[[], object]]] = [
            ("fit", functools.partial(project_fit, x, y, epochs)),
            ("eager", functools.partial(eager_loop, x, y, epochs)),
            ("floor", functools.partial(analytic_floor, x, y, epochs)),
        ]
        for rep in range(mode.reps):
            for name, run in rotated(variants, rep):
                gc.collect()
                times[name].append(seconds_of(run) / epochs * 1e6)
        note = f"{torch.get_num_threads()} thread(s), fit's step: {step}"
        label = size_label(num_data)
        rows.append(
            Row(
                2,
                f"train.fit vs eager tutorial loop, n={label}",
                times["fit"],
                times["eager"],
                "µs/epoch",
                Target(1.2, True, "≤ 1.2x") if num_data == 1_000 else None,
                note,
            )
        )
        rows.append(
            Row(
                2,
                f"train.fit vs analytic-gradient floor, n={label}",
                times["fit"],
                times["floor"],
                "µs/epoch",
                Target(2.0, True, "≤ 2x") if num_data >= 1_000_000 else None,
                f"{note}; floor: the plain analytic loop (≈8 passes over the data an epoch)",
            )
        )
        del data, x, y
    return rows


# ---------------------------------------------------------------- 5: mini-batch


def dataloader_loop(x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int) -> None:
    """The textbook mini-batch loop: DataLoader(TensorDataset) with shuffling, same SGD steps."""
    torch.manual_seed(0)
    model, loss_fn = nn.Linear(1, 1), nn.L1Loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )
    for _ in range(epochs):
        total = torch.zeros(())
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(xb)
        (total / x.shape[0]).item()


def mini_batch(mode: Mode, num_data: int = 1_000_000, batch_size: int = 1024) -> list[Row]:
    progress(f"5: mini-batch epochs, num_data={num_data}, batch {batch_size}")
    data = make_dataset(DataConfig(num_data=num_data), seed=0)
    x, y = data.x, data.y
    set_cpu_threads(num_data)
    project_fit(x[:10_000], y[:10_000], 1, batch_size)  # warm-up
    dataloader_loop(x[:10_000], y[:10_000], 1, batch_size)
    epochs = mode.mini_batch_epochs
    times: dict[str, list[float]] = {"fit": [], "loader": []}
    variants: list[tuple[str, Callable[[], object]]] = [
        ("fit", functools.partial(project_fit, x, y, epochs, batch_size)),
        ("loader", functools.partial(dataloader_loop, x, y, epochs, batch_size)),
    ]
    for rep in range(mode.mini_batch_reps):
        for name, run in rotated(variants, rep):
            gc.collect()
            times[name].append(seconds_of(run) / epochs)
    return [
        Row(
            5,
            f"mini-batch epoch, n={size_label(num_data)}, batch {batch_size}: "
            "fit(batch_size=...) vs DataLoader(TensorDataset, shuffle=True)",
            times["fit"],
            times["loader"],
            "s/epoch",
            Target(0.1, True, "≤ 0.1x"),
            f"{epochs} epoch(s) a repetition, {torch.get_num_threads()} thread(s)",
        )
    ]


# ---------------------------------------------------------------- 3: logging


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def tracking_server(root: Path, timeout: float = 120) -> Iterator[str]:
    """`mlflow server --workers 1` on a free loopback port in its own process group."""
    port = free_port()
    log = root / "server.log"
    env = child_env(None)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-runner consumers on 2 cores
    cmd = [
        str(MLFLOW_CLI), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
    ]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=out, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
            with (
                suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{url}/health", timeout=2) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=5)
        with suppress(ProcessLookupError):  # uvicorn workers left behind
            os.killpg(server.pid, signal.SIGKILL)


def logging_cost(mode: Mode, work: Path) -> list[Row]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from linreg_exp import tracking

    root = work / "logging"
    root.mkdir()
    data = make_dataset(DataConfig(), seed=0)
    set_cpu_threads(1_000)
    metrics = tracking.history_metrics(project_fit(data.x, data.y, 500))
    sample = max(1, min(mode.log_sample, len(metrics)))

    def batched(client: MlflowClient, run_id: str) -> float:
        return seconds_of(lambda: tracking.log_metrics_batched(client, run_id, metrics))

    def store_direct(client: MlflowClient, run_id: str) -> float:
        """The floor: MLflow's own store, called without the client (private API, bench only)."""
        store = client._tracking_client.store
        chunk = tracking.MAX_METRICS_PER_BATCH

        def log_direct() -> None:
            for i in range(0, len(metrics), chunk):
                store.log_batch(run_id, metrics=metrics[i : i + chunk], params=[], tags=[])

        return seconds_of(log_direct)

    def per_value(client: MlflowClient, run_id: str) -> float:
        part: list[Metric] = metrics[:sample]

        def log_each() -> None:
            for m in part:
                client.log_metric(run_id, m.key, m.value, m.timestamp, m.step)

        return seconds_of(log_each) * len(metrics) / sample

    rows: list[Row] = []
    progress("3: starting a local mlflow server")
    with tracking_server(root) as server_url:
        stores = [
            ("SQLite", f"sqlite:///{root / 'mlflow.db'}", 0.2),
            ("local HTTP server", server_url, 1.0),
        ]
        for name, uri, limit in stores:
            progress(f"3: logging to {name}, {mode.log_reps} repetitions")
            experiment_id = tracking.open_experiment(uri, "bench")  # schema created here
            client = MlflowClient(uri)
            warm = client.create_run(experiment_id).info.run_id
            tracking.log_metrics_batched(client, warm, metrics[:30])
            client.log_metric(warm, "warm", 1.0)
            times: dict[str, list[float]] = {"batched": [], "each": [], "store": []}
            variants: list[tuple[str, Callable[[MlflowClient, str], float]]] = [
                ("batched", batched),
                ("each", per_value),
                ("store", store_direct),
            ]
            for rep in range(mode.log_reps):
                for key, fn in rotated(variants, rep):
                    run_id = client.create_run(experiment_id).info.run_id
                    times[key].append(fn(client, run_id))
                    with redirect_stdout(io.StringIO()):  # MLflow prints the run's URL
                        client.set_terminated(run_id)
            note = f"per-value time: {sample} calls timed, scaled to {len(metrics)}"
            rows.append(
                Row(
                    3,
                    f"log 500 epochs x 3 metrics, {name}: log_metrics_batched vs "
                    "log_metric per value",
                    times["batched"],
                    times["each"],
                    "s",
                    None,
                    note,
                )
            )
            rows.append(
                Row(
                    3,
                    f"log 500 epochs x 3 metrics, {name}: log_metrics_batched vs MLflow's "
                    "store called directly (the floor)",
                    times["batched"],
                    times["store"],
                    "s",
                    None,
                    "the floor skips MlflowClient (its checks and copies); the rest is the store's",
                )
            )
            rows.append(
                Row(
                    3,
                    f"log 500 epochs x 3 metrics, {name}: seconds a run (batched)",
                    times["batched"],
                    [],
                    "s",
                    Target(limit, False, f"≤ {limit:g} s"),
                    f"{-(-len(metrics) // tracking.MAX_METRICS_PER_BATCH)} log_batch call(s)",
                )
            )
    return rows


# ---------------------------------------------------------------- 4: the grid


def grid(mode: Mode, work: Path) -> list[Row]:
    root = work / "grid"
    root.mkdir()
    jobs = mode.grid_jobs
    lrs = [f"{0.001 * 1.25**i:.5g}" for i in range(jobs)]
    env = child_env(f"sqlite:///{root / 'store' / 'mlflow.db'}")
    log = root / "child.log"
    progress(f"4: {jobs}-job grid, warming up the store")
    run_child(cli(f"hydra.run.dir={root}/warmup", "trainer.epochs=1", "plots.enabled=false"),
              root, env, log)  # fmt: skip
    sweep = [f"optimizer.lr={','.join(lrs)}", "plots.enabled=false"]

    def separate(rep: int) -> float:
        started = time.perf_counter()
        for i, lr in enumerate(lrs):
            overrides = [f"optimizer.lr={lr}", "plots.enabled=false"]
            run_child(cli(*overrides, f"hydra.run.dir={root}/sep{rep}-{i}"), root, env, log)
        return time.perf_counter() - started

    def basic(rep: int) -> float:
        args = cli("-m", *sweep, f"hydra.sweep.dir={root}/basic{rep}")
        return run_child(args, root, env, log).seconds

    def joblib(rep: int) -> float:
        args = cli(
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *sweep,
            f"hydra.sweep.dir={root}/joblib{rep}",
        )
        return run_child(args, root, env, log).seconds

    times: dict[str, list[float]] = {"separate": [], "basic": [], "joblib": []}
    variants: list[tuple[str, Callable[[int], float]]] = [
        ("separate", separate),
        ("basic", basic),
        ("joblib", joblib),
    ]
    for rep in range(mode.grid_reps):
        for name, fn in rotated(variants, rep):
            progress(f"4: repetition {rep + 1}/{mode.grid_reps}: {name}")
            times[name].append(fn(rep))
    per_job = statistics.median(times["separate"]) / jobs
    return [
        Row(
            4,
            f"{jobs}-job lr grid: one sweep (-m, basic launcher) vs {jobs} processes in turn",
            times["basic"],
            times["separate"],
            "s",
            Target(0.2, True, "≤ 0.2x") if jobs == 16 else None,
            f"jobs in one process, MLflow in its companion; one process a job: {per_job:.1f} s",
        ),
        Row(
            4,
            f"{jobs}-job lr grid: -m hydra/launcher=joblib n_jobs=2 vs {jobs} processes in turn",
            times["joblib"],
            times["separate"],
            "s",
            None,
            "",
        ),
    ]


# ---------------------------------------------------------------- report


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


SECTIONS = (1, 2, 3, 4, 5, 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sizes")
    parser.add_argument("--only", default="", help="comma-separated sections, e.g. 2,5")
    parser.add_argument("--no-write", action="store_true", help="do not write results.md")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    only = {int(s) for s in args.only.split(",") if s.strip()} or set(SECTIONS)
    started = time.perf_counter()
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_before = load()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="linreg-bench-") as tmp:
        work = Path(tmp)
        if 2 in only:
            rows += training_loop(mode)
        if 5 in only:
            rows += mini_batch(mode)
        if 3 in only:
            rows += logging_cost(mode, work)
        small_run_mib: float | None = None
        if 1 in only or 6 in only:
            process_rows = whole_process(mode, work)
            small_run_mib = statistics.median(process_rows[-1].ours)
            rows += [r for r in process_rows if r.section in only]
        if 4 in only:
            rows += grid(mode, work)
        if 6 in only:
            rows += big_memory(mode, work, small_run_mib)
    rows.sort(key=lambda r: r.section)
    elapsed = time.perf_counter() - started
    missed = [r for r in rows if r.met() is False]
    lines = [
        "# linreg_exp benchmark: framework cost against the bare tutorial",
        "",
        f"- Date: {stamp}; `benchmarks/bench.py{' --quick' if args.quick else ''}` "
        f"({mode.name} mode) took {elapsed / 60:.1f} min.",
        f"- Machine: {machine()}.",
        f"- Load average (1/5/15 min) at start: {load_before}; at end: {load()}. Other "
        "processes may have been running: every ratio pairs measurements of one repetition, "
        "the variants interleaved in rotating order.",
        "- Ratio = ours / baseline per repetition (lower is better for ours); median and "
        "min-max over n repetitions. Targets are judged on the median.",
        "- Section 1 runs against a throw-away sqlite store that already exists (created by a "
        "warm-up run) unless it says NEW; section 3's per-value baseline is timed on a sample of "
        "calls and scaled.",
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
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)
        progress(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
