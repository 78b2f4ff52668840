"""Pruning (sweep.pruner): the pruners' decisions, survivors gathered into smaller tensors that
train on bit for bit, scores riding in their epochs' rows to the store; then real sweeps
(`python -m linreg_exp`, SQLite stores under tmp_path) through the batched launcher, the basic
one (an Optuna study in the sweep dir shares the jobs' scores) and an Optuna search."""

from __future__ import annotations

import itertools
import math
import threading
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from linreg_exp.data import make_dataset
from linreg_exp.schema import DataConfig
from linreg_exp.sweeps.pruning import Halving, Hyperband, Median, open_storage, rung, study_storage
from linreg_exp.tracking.messages import (
    Close,
    Closed,
    EpochBatch,
    Epochs,
    FinishRun,
    Open,
    Opened,
    Reply,
    Request,
)
from linreg_exp.tracking.recorder import Tracker
from linreg_exp.train import Member, Trainer
from linreg_exp.vocab import Outcome
from tests.conftest import run_cli
from tests.support.store import empty_store, sweep_runs

# ---------------------------------------------------------------- the pruners' decisions


def test_a_study_lives_in_sqlite_a_database_url_or_a_journal_file(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    assert study_storage(None, sweep_dir) == f"sqlite:///{sweep_dir / 'optuna.db'}"
    assert study_storage("", sweep_dir) == study_storage(None, sweep_dir)
    url = "postgresql+psycopg2://u:p@host/db"
    assert study_storage(url, sweep_dir) == url
    assert study_storage("optuna.log", sweep_dir) == str(sweep_dir / "optuna.log")
    assert study_storage("/abs/s.log", sweep_dir) == "/abs/s.log"
    journal = study_storage("optuna.log", sweep_dir)
    study = optuna.create_study(storage=open_storage(journal), study_name="s")
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    again = optuna.load_study(storage=open_storage(journal), study_name="s")  # a rerun's
    assert [t.value for t in again.trials] == [0.5]


def test_rungs_are_the_first_times_powers_of_eta() -> None:
    assert [s for s in range(1, 700) if rung(s, 25, 3)] == [25, 75, 225, 675]


def test_halving_keeps_the_best_third_at_each_rung_only() -> None:
    halving = Halving(25, 3, "minimize")
    rows, values = list(range(9)), [5.0, 1.0, 7.0, 3.0, 9.0, 2.0, 8.0, 4.0, 6.0]
    assert halving.decide(50, rows, values) == []  # not a rung
    assert sorted(halving.decide(25, rows, values)) == [0, 2, 4, 6, 7, 8]  # keeps 1, 5 and 3
    assert halving.decide(75, [1, 5, 3], [1.0, 2.0, 3.0]) == [5, 3]  # one at least goes on
    assert halving.decide(225, [1], [1.0]) == []
    # 256 rows: 85, 28, 9 go on (the rungs)
    survivors = list(range(256))
    for step in (25, 75, 225):
        pruned = set(halving.decide(step, survivors, [float(r) for r in survivors]))
        survivors = [r for r in survivors if r not in pruned]
    assert survivors == list(range(9))


def test_halving_maximizes_and_ranks_a_non_finite_score_last() -> None:
    assert Halving(1, 2, "maximize").decide(1, [0, 1, 2, 3], [1.0, 4.0, 3.0, -math.inf]) == [0, 3]
    assert Halving(1, 2, "minimize").decide(1, [0, 1], [math.inf, 5.0]) == [0]


def test_median_stops_the_rows_worse_than_the_median() -> None:
    median = Median("minimize")
    assert sorted(median.decide(10, [0, 1, 2, 3, 4], [3.0, 1.0, 5.0, 2.0, 4.0])) == [2, 4]
    assert median.decide(10, [7], [100.0]) == []  # alone: nothing to compare with


def test_hyperband_deals_rows_to_brackets_that_judge_later() -> None:
    hyperband = Hyperband(10, 3, 90, "minimize")  # brackets from 10, 30 and 90 epochs
    assert hyperband.brackets == 3
    rows = list(range(9))
    values = [float(9 - r) for r in rows]  # the last rows are best
    # at 10 epochs only bracket 0 (rows 0, 3, 6) halves: row 6 goes on
    assert sorted(hyperband.decide(10, rows, values)) == [0, 3]
    # at 30 epochs bracket 0 (row 6 left) and bracket 1 (rows 1, 4, 7): row 7 goes on
    assert sorted(hyperband.decide(30, [1, 2, 4, 5, 6, 7, 8], [8.0, 7, 5, 4, 3, 2, 1])) == [1, 4]


# ---------------------------------------------------------------- survivors gathered


def test_survivors_gathered_into_smaller_tensors_train_on_bit_for_bit() -> None:
    members = [
        Member(seed, loss, optimizer, lr, momentum=momentum)
        for (seed, loss, optimizer, lr), momentum in zip(
            itertools.product((0, 1), ("torch.nn.L1Loss", "torch.nn.MSELoss"),
                              ("torch.optim.SGD", "torch.optim.Adam"), (0.01, 0.03)),
            itertools.cycle((0.0, 0.9)), strict=False)
    ]  # fmt: skip
    data = [make_dataset(DataConfig(num_data=200), m.seed) for m in members]
    for batch_size in (None, 64):
        whole = Trainer(members, data, batch_size, torch.device("cpu"))
        gathered = Trainer(members, data, batch_size, torch.device("cpu"))
        everyone = torch.ones(len(members), dtype=torch.bool)
        for _ in range(5):
            whole.step(everyone)
            gathered.step(everyone)
        kept = [1, 4, 6, 11, 15]
        gathered.keep(kept)
        for _ in range(20):
            full = whole.step(everyone)
            few = gathered.step(torch.ones(len(kept), dtype=torch.bool))
            for name in ("loss", "weight", "bias"):
                assert torch.equal(full[name][kept], few[name]), (batch_size, name)


# ---------------------------------------------------------------- a score rides in its epoch's row


class Recording:
    """A transport of our own: what the tracker sends, answered at once."""

    def __init__(self) -> None:
        self.sent: list[Request] = []
        self.lock = threading.Lock()

    def request(self, message: Request) -> Reply:
        with self.lock:
            self.sent.append(message)
        if isinstance(message, Close):
            return Closed(None, None)
        return Opened("0", None)  # any other reply: the tracker only hands it back

    def stop_waiting(self) -> None: ...

    def close(self) -> None: ...


def test_a_score_rides_in_its_epochs_row_or_in_order_beside_a_thinned_one() -> None:
    transport = Recording()
    tracker = Tracker(transport, Open("sqlite:///x.db", "e"))  # type: ignore[arg-type]
    tracker.report("a", 1, {"val_mse": 0.5})
    tracker.report("a", 2, {"val_mse": 0.25})  # epoch 2 was thinned out (log_every_n_epochs)
    rows = [(0, 10, (1.0,)), (1, 11, (0.9,)), (3, 13, (0.7,))]
    tracker.submit(Epochs([EpochBatch("a", ("loss",), rows), EpochBatch("b", ("loss",), rows)]))
    tracker.report("a", 5, {"val_mse": 0.1})  # its epoch never sent: on its own before the end
    tracker.submit(FinishRun("a", Outcome.COMPLETED, {}, {}, [], None, None))
    tracker.close()
    epochs = [m for m in transport.sent if isinstance(m, Epochs)]
    first = [(b.run, b.names, [(r[0], r[2]) for r in b.rows]) for b in epochs[0].batches]
    assert first == [
        ("a", ("loss",), [(0, (1.0,))]),
        ("a", ("loss", "val_mse"), [(1, (0.9, 0.5))]),
        ("a", ("val_mse",), [(2, (0.25,))]),
        ("a", ("loss",), [(3, (0.7,))]),
        ("b", ("loss",), [(0, (1.0,)), (1, (0.9,)), (3, (0.7,))]),
    ]
    assert [(b.run, b.names, [(r[0], r[2]) for r in b.rows]) for b in epochs[1].batches] == [
        ("a", ("val_mse",), [(5, (0.1,))])
    ]
    order = [type(m).__name__ for m in transport.sent]
    assert order.index("FinishRun") > order.index("Epochs", order.index("Epochs") + 1)


# ---------------------------------------------------------------- real sweeps

FAST = ["plots.enabled=false", "mlflow.system_metrics=false"]
GRID = ["-m", "hydra/launcher=batched", "optimizer.lr=0.0003,0.001,0.003",
        "loss=l1,mse,huber", "trainer.epochs=90", *FAST]  # fmt: skip


def children(uri: str) -> dict[int, Run]:
    _, found = sweep_runs(uri)
    return {int(run.data.tags["linreg.job_num"]): run for run in found}


def parent_of(uri: str) -> Run:
    parent, _ = sweep_runs(uri)
    return parent


def epochs_logged(uri: str, run: Run) -> int:
    return len(MlflowClient(uri).get_metric_history(run.info.run_id, "loss"))


@pytest.mark.slow
def test_a_batched_grid_with_asha_prunes_and_picks_the_same_best(tmp_path: Path) -> None:
    plain, pruned = empty_store(tmp_path / "a.db"), empty_store(tmp_path / "b.db")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    result = run_cli([*GRID, "sweep.pruner=none"], tmp_path / "a", plain)
    assert result.returncode == 0, result.stderr
    result = run_cli([*GRID, "sweep.pruner=asha", "sweep.report_every=10"], tmp_path / "b",
                     pruned)  # fmt: skip
    assert result.returncode == 0, result.stderr
    before, after = children(plain), children(pruned)
    assert len(before) == len(after) == 9
    # unpruned: as before, every run to its last epoch, no score on the way, nothing pruned
    assert all(r.data.tags["linreg.outcome"] == "completed" for r in before.values())
    history = MlflowClient(plain).get_metric_history(before[0].info.run_id, "val_mse")
    assert {m.step for m in history} == {0}
    assert "jobs_pruned" not in parent_of(plain).data.metrics
    # pruned: rungs at 10, 30, 90 epochs keep 3, then 1 (the last rung is the end)
    gone = {n: r for n, r in after.items() if r.data.tags["linreg.outcome"] == "pruned"}
    assert len(gone) == 9 - 1
    for run in gone.values():
        assert run.info.status == "FINISHED"
        stopped = int(run.data.tags["linreg.pruned_at_epoch"])
        assert stopped in (9, 29)
        assert epochs_logged(pruned, run) == stopped + 1 < 90
    # the survivors end exactly as unpruned (bit for bit), and the best is the same
    for number, run in after.items():
        if number not in gone:
            assert run.data.metrics["val_mse"] == before[number].data.metrics["val_mse"]
            assert run.data.metrics["final_weight"] == before[number].data.metrics["final_weight"]
    best_before, best_after = parent_of(plain), parent_of(pruned)
    assert best_after.data.tags["linreg.best_run_id"] == after[
        next(n for n, r in before.items()
             if r.info.run_id == best_before.data.tags["linreg.best_run_id"])
    ].info.run_id  # fmt: skip
    assert best_after.data.metrics["jobs_pruned"] == 8
    saved = sum(90 - int(r.data.tags["linreg.pruned_at_epoch"]) - 1 for r in gone.values())
    assert best_after.data.metrics["epochs_saved"] == saved
    assert f"8 pruned ({saved} epochs saved)" in result.stdout + result.stderr
    # the score every 10 epochs, as the objective's metric at that epoch's step
    survivor = next(r for n, r in after.items() if n not in gone)
    steps = [m.step for m in MlflowClient(pruned).get_metric_history(survivor.info.run_id,
                                                                     "val_mse")]  # fmt: skip
    assert sorted(set(steps)) == [0, 9, 19, 29, 39, 49, 59, 69, 79, 89]


@pytest.mark.slow
def test_a_basic_grid_with_the_median_pruner_prunes_later_jobs(tmp_path: Path, store: str) -> None:
    lrs = "0.1,0.05,0.03,0.02,0.01,0.0001,0.0002,0.0003"  # the hopeless ones come last
    args = ["-m", f"optimizer.lr={lrs}", "trainer.epochs=40", "sweep.pruner=median",
            "sweep.report_every=10", *FAST]  # fmt: skip
    result = run_cli(args, tmp_path, store)
    assert result.returncode == 0, result.stderr
    runs = children(store)
    pruned = [n for n, r in runs.items() if r.data.tags["linreg.outcome"] == "pruned"]
    assert pruned and set(pruned) <= {5, 6, 7}  # Optuna's median: 5 complete first
    assert all(runs[n].info.status == "FINISHED" for n in pruned)
    study = optuna.load_study(
        study_name="pruning", storage=f"sqlite:///{tmp_path / 'multirun' / 'optuna.db'}"
    )
    states = {t.user_attrs["linreg.job_num"]: t.state.name for t in study.trials}
    assert states == {n: "PRUNED" if n in pruned else "COMPLETE" for n in range(8)}
    assert parent_of(store).data.metrics["jobs_pruned"] == len(pruned)


@pytest.mark.slow
def test_an_optuna_search_with_the_median_pruner_reports_and_prunes(
    tmp_path: Path, store: str
) -> None:
    args = ["hparams_search=lr_optuna", "hydra.sweeper.n_trials=12",
            "optimizer.lr=choice(0.05,0.0001)", "trainer.epochs=40",
            "sweep.pruner=median", "sweep.report_every=10", *FAST]  # fmt: skip
    result = run_cli(args, tmp_path, store)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(
        study_name="lr_search", storage=f"sqlite:///{tmp_path / 'multirun' / 'optuna.db'}"
    )
    trials = study.trials
    assert len(trials) == 12 and all(t.intermediate_values for t in trials)
    assert all(sorted(t.intermediate_values)[0] == 10 for t in trials)
    pruned = {t.user_attrs["linreg.job_num"] for t in trials if t.state.name == "PRUNED"}
    assert pruned
    runs = children(store)
    assert {n for n, r in runs.items() if r.data.tags["linreg.outcome"] == "pruned"} == pruned
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert parent_of(store).data.metrics["best_val_mse"] == best.value
