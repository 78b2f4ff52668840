"""`make bench`: what the framework costs on top of the bare tutorial, as side-by-side ratios.

Every ratio compares two things measured in this same invocation, interleaved repetition by
repetition, so a busy machine slows both alike. Writes benchmarks/results.md.

    .venv/bin/python benchmarks/bench.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from linreg_exp.data import make_dataset  # noqa: E402
from linreg_exp.schema import DataConfig  # noqa: E402
from linreg_exp.train import History, fit, set_cpu_threads  # noqa: E402


@dataclass
class Row:
    what: str
    ours: list[float]
    base: list[float]
    unit: str
    target: float | None  # the ratio ours/base must stay at or below this
    note: str = ""

    @property
    def ratios(self) -> list[float]:
        return [o / b for o, b in zip(self.ours, self.base, strict=True)]

    def markdown(self) -> str:
        ratios = self.ratios
        ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        verdict = (
            ""
            if self.target is None
            else (
                "met"
                if max(ratios) <= self.target
                else ("median met" if statistics.median(ratios) <= self.target else "MISSED")
            )
        )
        target = "" if self.target is None else f"≤ {self.target:g}x"
        return (
            f"| {self.what} | {statistics.median(self.ours):.4g} {self.unit} | "
            f"{statistics.median(self.base):.4g} {self.unit} | {ratio} | {target} | {verdict} | "
            f"{self.note} |"
        )


def env_without_mlflow(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update(extra)
    return env


def timed_process(args: Sequence[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{args} failed: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return elapsed, usage.ru_maxrss * 1024


def cli(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "linreg_exp", *overrides]


# ---- 1 and 6: whole process and peak memory


def whole_process(reps: int, work: Path) -> list[Row]:
    warm = f"sqlite:///{work / 'warm.db'}"
    env = env_without_mlflow(MLFLOW_TRACKING_URI=warm)
    bare = [sys.executable, str(REPO / "benchmarks" / "bare_tutorial.py")]
    timed_process(cli(f"hydra.run.dir={work}/w"), work, env)  # create the store once
    results: dict[str, list[tuple[float, int]]] = {
        k: [] for k in ("bare", "plots", "noplots", "new")
    }
    for rep in range(reps):
        results["bare"].append(timed_process(bare, work, env))
        results["plots"].append(timed_process(cli(f"hydra.run.dir={work}/p{rep}"), work, env))
        results["noplots"].append(
            timed_process(cli(f"hydra.run.dir={work}/n{rep}", "plots.enabled=false"), work, env)
        )
        new_env = env_without_mlflow(MLFLOW_TRACKING_URI=f"sqlite:///{work}/new{rep}.db")
        results["new"].append(timed_process(cli(f"hydra.run.dir={work}/s{rep}"), work, new_env))
    seconds = {k: [t for t, _ in v] for k, v in results.items()}
    memory = {k: [m / 2**20 for _, m in v] for k, v in results.items()}
    return [
        Row("default run, whole process, plots on", seconds["plots"], seconds["bare"], "s", 1.5),
        Row("default run, whole process, plots off", seconds["noplots"], seconds["bare"], "s", 1.3),
        Row(
            "default run on a NEW store (schema created), plots on",
            seconds["new"],
            seconds["bare"],
            "s",
            None,
        ),
        Row(
            "peak memory, default run vs bare script", memory["plots"], memory["bare"], "MiB", None
        ),
    ]


def memory_at_1e8(work: Path) -> Row:
    env = env_without_mlflow(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'warm.db'}")
    _, peak = timed_process(
        cli(
            f"hydra.run.dir={work}/big",
            "data.num_data=100000000",
            "trainer.epochs=3",
            "plots.enabled=false",
        ),
        work,
        env,
    )
    limit = 24 * 2**30
    return Row(
        "num_data=1e8 (3 epochs): peak memory vs 24 GiB",
        [peak / 2**20],
        [limit / 2**20],
        "MiB",
        1.0,
        f"{peak / 1e8:.0f} bytes a point",
    )


# ---- 2 and 5: the training loop


def eager_tutorial(x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    torch.manual_seed(0)
    model, loss_fn = nn.Linear(1, 1), nn.L1Loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()


def analytic_floor(x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """Hand-written L1 gradient on raw tensors: no autograd, no optimizer object."""
    w, b = torch.zeros(()), torch.zeros(())
    for _ in range(epochs):
        residual = w * x + b - y
        sign = residual.sign()
        loss = residual.abs().mean()
        w -= 0.01 * (sign * x).mean()
        b -= 0.01 * sign.mean()
        loss.item()


def project_fit(
    x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int | None = None
) -> None:
    from linreg_exp.data import Dataset

    sgd = functools.partial(torch.optim.SGD, lr=0.01)
    fit(Dataset(x, y), nn.L1Loss(), sgd, epochs, batch_size, 0, History())


def dataloader_loop(x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int) -> None:
    torch.manual_seed(0)
    model, loss_fn = nn.Linear(1, 1), nn.L1Loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()


def per_epoch_us(
    fn: Callable[[torch.Tensor, torch.Tensor, int], None],
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
) -> float:
    started = time.perf_counter()
    fn(x, y, epochs)
    return (time.perf_counter() - started) / epochs * 1e6


def training_loop(reps: int, sizes: Sequence[tuple[int, int]]) -> list[Row]:
    rows = []
    for num_data, epochs in sizes:
        data = make_dataset(DataConfig(num_data=num_data), seed=0)
        set_cpu_threads(num_data)
        project_fit(data.x, data.y, 2)  # warm-up: torch.optim's first use imports torch._dynamo
        ours, eager, floor = [], [], []
        for _ in range(reps):
            eager.append(per_epoch_us(eager_tutorial, data.x, data.y, epochs))
            floor.append(per_epoch_us(analytic_floor, data.x, data.y, epochs))
            ours.append(per_epoch_us(project_fit, data.x, data.y, epochs))
        size = f"{num_data:.0e}".replace("+0", "")
        threads = f"{torch.get_num_threads()} thread(s)"
        if num_data <= 1000:
            rows.append(
                Row(
                    f"training loop, n={size}, vs eager tutorial loop",
                    ours,
                    eager,
                    "µs/epoch",
                    1.2,
                    threads,
                )
            )
        else:
            rows.append(
                Row(
                    f"training loop, n={size}, vs eager tutorial loop",
                    ours,
                    eager,
                    "µs/epoch",
                    None,
                    threads,
                )
            )
        rows.append(
            Row(
                f"training loop, n={size}, vs analytic floor",
                ours,
                floor,
                "µs/epoch",
                2.0 if num_data >= 1_000_000 else None,
                threads,
            )
        )
    return rows


def mini_batch(reps: int, num_data: int) -> Row:
    data = make_dataset(DataConfig(num_data=num_data), seed=0)
    set_cpu_threads(1)
    ours, loader = [], []
    for _ in range(reps):
        ours.append(
            per_epoch_us(functools.partial(project_fit, batch_size=1024), data.x, data.y, 1)
        )
        loader.append(
            per_epoch_us(functools.partial(dataloader_loop, batch_size=1024), data.x, data.y, 1)
        )
    size = f"{num_data:.0e}".replace("+0", "")
    return Row(
        f"mini-batch epoch, n={size}, batch 1024, vs DataLoader(TensorDataset)",
        [u / 1e6 for u in ours],
        [u / 1e6 for u in loader],
        "s",
        0.1,
    )


# ---- 3: logging


def logging_cost(reps: int, work: Path, per_value_sample: int) -> list[Row]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from linreg_exp import tracking
    from tests.servers import mlflow_server

    history = History(
        loss=[1.0] * 500,
        weight=[2.0] * 500,
        bias=[3.0] * 500,
        timestamp_ms=[int(time.time() * 1000)] * 500,
    )
    metrics = tracking.history_metrics(history)

    def batched(client: MlflowClient, experiment_id: str) -> float:
        run_id = client.create_run(experiment_id).info.run_id
        started = time.perf_counter()
        tracking.log_metrics_batched(client, run_id, metrics)
        elapsed = time.perf_counter() - started
        client.set_terminated(run_id)
        return elapsed

    def per_value(client: MlflowClient, experiment_id: str) -> float:
        """One log_metric call a value, timed on a sample and scaled to all 1500 values."""
        run_id = client.create_run(experiment_id).info.run_id
        sample: list[Metric] = metrics[:per_value_sample]
        started = time.perf_counter()
        for metric in sample:
            client.log_metric(run_id, metric.key, metric.value, metric.timestamp, metric.step)
        elapsed = (time.perf_counter() - started) * len(metrics) / len(sample)
        client.set_terminated(run_id)
        return elapsed

    rows = []
    sqlite_uri = f"sqlite:///{work / 'logging.db'}"
    with mlflow_server(
        f"sqlite:///{work / 'server.db'}",
        work / "server.log",
        default_artifact_root=work / "server-artifacts",
    ) as server:
        for name, uri, target in (
            ("SQLite", sqlite_uri, 0.2),
            ("local HTTP server", server.url, 1.0),
        ):
            experiment_id = tracking.open_experiment(uri, "bench")
            client = MlflowClient(uri)
            ours = [batched(client, experiment_id) for _ in range(reps)]
            base = [per_value(client, experiment_id) for _ in range(reps)]
            rows.append(
                Row(
                    f"logging 500 epochs x 3 metrics ({name}) vs one call a value",
                    ours,
                    base,
                    "s",
                    None,
                    f"target ≤ {target} s a run: {'met' if max(ours) <= target else 'MISSED'}",
                )
            )
    return rows


# ---- 4: a 16-job grid


def grid(work: Path, jobs: int) -> list[Row]:
    lrs = [f"{0.001 * 1.3**i:.5f}" for i in range(jobs)]
    env = env_without_mlflow(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'grid.db'}")
    timed_process(cli(f"hydra.run.dir={work}/g", "trainer.epochs=1"), work, env)
    one_process, _ = timed_process(
        cli(
            "-m",
            f"optimizer.lr={','.join(lrs)}",
            "plots.enabled=false",
            f"hydra.sweep.dir={work}/basic",
        ),
        work,
        env,
    )
    joblib, _ = timed_process(
        cli(
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"optimizer.lr={','.join(lrs)}",
            "plots.enabled=false",
            f"hydra.sweep.dir={work}/joblib",
        ),
        work,
        env,
    )
    separate = sum(
        timed_process(
            cli(f"optimizer.lr={lr}", "plots.enabled=false", f"hydra.run.dir={work}/sep{i}"),
            work,
            env,
        )[0]
        for i, lr in enumerate(lrs)
    )
    return [
        Row(
            f"{jobs}-job lr grid: one process (basic launcher) vs {jobs} processes",
            [one_process],
            [separate],
            "s",
            0.2,
        ),
        Row(
            f"{jobs}-job lr grid: joblib n_jobs=2 vs {jobs} processes",
            [joblib],
            [separate],
            "s",
            None,
        ),
    ]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import hydra
    import mlflow

    return (
        f"{datetime.date.today()}, {cpu}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"mlflow {mlflow.__version__}, hydra-core {hydra.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sizes")
    args = parser.parse_args()
    reps = 2 if args.quick else 5
    sizes = [(1000, 500), (100_000, 100), (1_000_000, 20)] + (
        [] if args.quick else [(10_000_000, 5)]
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="linreg-bench-") as tmp:
        work = Path(tmp)
        steps: list[tuple[str, Callable[[], list[Row]]]] = [
            ("training loop", lambda: training_loop(reps, sizes)),
            ("mini-batch", lambda: [mini_batch(max(1, reps // 2), 1_000_000)]),
            ("logging", lambda: logging_cost(reps, work, 150 if args.quick else 300)),
            ("whole process", lambda: whole_process(reps, work)),
            ("16-job grid", lambda: grid(work, 16)),
            ("memory at 1e8", lambda: [memory_at_1e8(work)]),
        ]
        for name, step in steps:
            print(f"... {name}", file=sys.stderr, flush=True)
            rows.extend(step())
    header = (
        "| measure | ours | baseline | ratio: median (min-max) | target | verdict | note |\n"
        "|---|---|---|---|---|---|---|"
    )
    table = "\n".join([header, *(row.markdown() for row in rows)])
    text = (
        f"# linreg_exp benchmark\n\nMachine: {machine()}.\n"
        f"Mode: {'quick' if args.quick else 'full'}, {reps} repetitions, interleaved.\n\n"
        f"{table}\n"
    )
    print(text)
    (REPO / "benchmarks" / "results.md").write_text(text)


if __name__ == "__main__":
    main()
