"""Batched sweeps: a grid trained as one program gives each config exactly what nn.Linear and
torch.optim give it alone, and each config is still its own run."""

from __future__ import annotations

import functools
import itertools
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from torch import nn

from linreg_exp.data import Dataset, make_dataset
from linreg_exp.schema import DataConfig
from linreg_exp.sweeps.batched import JOBS_PER_WRITER
from linreg_exp.train import Member, OwnStep, Trainer, fit
from tests.conftest import run_cli
from tests.support.store import empty_store, points, sweep_runs

LOSSES = {"torch.nn.L1Loss": nn.L1Loss, "torch.nn.MSELoss": nn.MSELoss,
          "torch.nn.HuberLoss": nn.HuberLoss}  # fmt: skip


def fit_one(member: Member, data: Dataset, epochs: int, batch_size: int | None) -> dict[str, float]:
    """What torch.optim and the torch.nn loss give this config alone (the trainer's OwnStep,
    the path of a loss or optimizer of the user's own): its last epoch."""
    loss = LOSSES[member.loss](**({"delta": member.delta} if "Huber" in member.loss else {}))
    if member.optimizer == "torch.optim.SGD":
        optimizer = functools.partial(
            torch.optim.SGD, lr=member.lr, momentum=member.momentum, dampening=member.dampening,
            weight_decay=member.weight_decay, nesterov=member.nesterov,
        )  # fmt: skip
    else:
        optimizer = functools.partial(
            torch.optim.Adam, lr=member.lr, betas=member.betas, eps=member.eps,
            weight_decay=member.weight_decay, amsgrad=member.amsgrad,
        )  # fmt: skip
    *_, last = fit(data, member, epochs, batch_size, own=OwnStep(loss, optimizer))
    return last


CASES = [
    (DataConfig(num_data=300), Member(seed, loss, optimizer, lr))
    for loss, optimizer, lr, seed in itertools.product(
        LOSSES, ("torch.optim.SGD", "torch.optim.Adam"), (0.005, 0.02), (0, 1)
    )
] + [
    (DataConfig(num_data=300, noise_std=2.0), Member(0, "torch.nn.MSELoss", "torch.optim.SGD",
           0.01, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (DataConfig(num_data=300), Member(2, "torch.nn.L1Loss", "torch.optim.SGD", 0.01,
           momentum=0.5, dampening=0.1)),
    (DataConfig(num_data=300, x_min=-3.0), Member(1, "torch.nn.HuberLoss", "torch.optim.Adam",
           0.05, delta=2.0, amsgrad=True, weight_decay=0.01, betas=(0.8, 0.99))),
]  # fmt: skip
MEMBERS = [member for _, member in CASES]
DATASETS = [make_dataset(data, member.seed) for data, member in CASES]


@pytest.mark.parametrize(("batch_size", "epochs"), [(None, 150), (64, 4)])
def test_one_program_gives_every_config_what_torch_optim_gives_it_alone(
    batch_size: int | None, epochs: int
) -> None:
    trainer = Trainer(MEMBERS, DATASETS, batch_size, torch.device("cpu"))
    active = torch.ones(len(MEMBERS), dtype=torch.bool)
    for _ in range(epochs):
        last = trainer.step(active)
    for index, member in enumerate(MEMBERS):
        expected = fit_one(member, DATASETS[index], epochs, batch_size)
        got = {name: float(values[index]) for name, values in last.items()}
        assert got == expected, member  # bit for bit


@pytest.mark.parametrize("batch_size", [None, 50])
def test_three_features_train_as_torch_optim_trains_them(batch_size: int | None) -> None:
    data = DataConfig(num_data=200, num_features=3, true_weight=[1.0, -2.0, 0.5])
    members = [Member(seed, "torch.nn.MSELoss", "torch.optim.SGD", 0.002) for seed in (0, 1)]
    sets = [make_dataset(data, member.seed) for member in members]
    trainer = Trainer(members, sets, batch_size, torch.device("cpu"))
    for _ in range(30):
        last = trainer.step(torch.ones(2, dtype=torch.bool))
    for index, member in enumerate(members):
        expected = fit_one(member, sets[index], 30, batch_size)
        weights = last["weight"][index].tolist()
        got = {"loss": float(last["loss"][index]), "weight.x1": weights[0],
               "weight.x2": weights[1], "weight.x3": weights[2],
               "bias": float(last["bias"][index])}  # fmt: skip
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_a_config_that_is_done_stops_moving() -> None:
    trainer = Trainer(MEMBERS[:2], DATASETS[:2], None, torch.device("cpu"))
    trainer.step(torch.tensor([True, True]))
    before = float(trainer.weight[0])
    trainer.step(torch.tensor([False, True]))
    assert float(trainer.weight[0]) == before and trainer.epochs_done == 2


@pytest.mark.parametrize("gather", [False, True])
def test_fit_trains_the_rows_its_hook_answers_and_hands_gone_rows_as_nan(gather: bool) -> None:
    """Trainer.fit owns the loop, the hook (the lifecycle) says which rows go on: a row it stops
    stops moving, whether gathered out or masked; the rows that go on train on bit for bit."""
    members, sets = MEMBERS[:3], DATASETS[:3]
    seen: list[torch.Tensor] = []
    training = torch.ones(3, dtype=torch.bool)

    def on_epoch(epoch: int, rows: torch.Tensor) -> torch.Tensor:
        seen.append(rows.clone())
        if epoch == 1:
            training[1] = False  # row 1 stops after its second epoch (pruned, say)
        if epoch == 4:
            training[:] = False
        return training

    trainer = Trainer(members, sets, None, torch.device("cpu"))
    trainer.fit(10, on_epoch, gather=gather)
    assert len(seen) == 5  # nothing trains once the hook answers no row
    alone = Trainer([members[0], members[2]], [sets[0], sets[2]], None, torch.device("cpu"))
    for epoch in range(5):
        expected = alone.step()
        assert seen[epoch][[0, 2], 0].tolist() == expected["loss"].tolist()  # bit for bit
    if gather:  # gathered out: NaN, never read
        assert all(torch.isnan(rows[1]).all() for rows in seen[2:])
    else:  # masked: its line stays where it stopped
        assert all(rows[1, 1:].tolist() == seen[1][1, 1:].tolist() for rows in seen[2:])


# A row that diverges stops there and the others go on: in-process above and in
# tests/test_lifecycle.py (the one lifecycle of both engines); end to end, a sweep's diverged jobs
# are tests/test_sweeps.py's.


@pytest.mark.slow
def test_configs_of_other_shapes_train_apart(tmp_path: Path) -> None:
    store = empty_store(tmp_path / "mlflow.db")
    args = ["-m", "hydra/launcher=batched", "data.num_data=100,200", "seed=0,1",
            "loss._target_=torch.nn.L1Loss,torch.nn.SmoothL1Loss", "trainer.epochs=30",
            "plots.enabled=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    first = run_cli(args, tmp_path, store)
    assert first.returncode == 0, first.stderr
    output = first.stdout + first.stderr
    assert re.search(r"8 jobs in 6 programs: .*; 4 with a loss or optimizer of their own", output)
    parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED"
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    steps = {c.data.tags["linreg.train_step"] for c in children}
    assert steps == {
        "batched",
        "autograd",
    }  # SmoothL1Loss: a program of its own, with its loss and torch.optim
    # (a resumed sweep keeps its FINISHED rows: tests/test_lifecycle.py, in-process, and
    # tests/test_sweeps.py, end to end)


@pytest.mark.slow
def test_a_grid_past_one_writers_share_records_every_run_under_one_parent(tmp_path: Path) -> None:
    """More jobs than one writer takes (JOBS_PER_WRITER): a second writer process records part
    of them, on the parent that the launch's own writer created while the jobs composed."""
    jobs = JOBS_PER_WRITER + 1
    store = empty_store(tmp_path / "mlflow.db")
    args = ["-m", "hydra/launcher=batched", f"seed=range(0,{jobs})", "trainer.epochs=20",
            "plots.enabled=false", "mlflow.system_metrics=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    result = run_cli(args, tmp_path, store)
    assert result.returncode == 0, result.stderr
    parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED"
    assert sorted(int(c.data.tags["linreg.job_num"]) for c in children) == list(range(jobs))
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert points(store, child, "loss") == 20


@pytest.mark.slow
def test_a_stop_signal_ends_every_batched_run_killed_with_its_epochs(tmp_path: Path) -> None:
    signum = signal.SIGTERM  # a scheduler's; Ctrl-C: tests/test_reliability.py
    from tests.test_reliability import start_cli, wait_for_running

    store = empty_store(tmp_path / "mlflow.db")
    args = ["-m", "hydra/launcher=batched", "optimizer.lr=0.01,0.02", "trainer.epochs=100000000",
            "plots.enabled=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    process = start_cli(args, tmp_path, store)
    wait_for_running(tmp_path / "mlflow.db", process, count=3)  # the parent and both configs
    client = MlflowClient(store)
    deadline = time.monotonic() + 60
    while not all(points(store, c, "loss") > 100 for c in sweep_children(client)):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "interrupted after" in stderr
    runs = client.search_runs([client.get_experiment_by_name("linreg").experiment_id])
    assert {r.info.status for r in runs} == {"KILLED"} and len(runs) == 3
    for child in sweep_children(client):
        assert child.data.tags["linreg.stopped_by"] == signal.Signals(signum).name
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "loss")]
        assert sorted(steps) == list(range(len(steps))) and len(steps) > 100


def sweep_children(client: MlflowClient) -> list[Run]:
    experiment = client.get_experiment_by_name("linreg")
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]
