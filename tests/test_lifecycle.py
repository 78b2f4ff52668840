"""The run lifecycle (linreg_exp/lifecycle.py) in milliseconds: each outcome a run can end with
(completed, diverged, interrupted, error, pruned, kept from an earlier launch), for one config
and for a program of three, without training and without MLflow.

The engines only hand `Lifecycle.epoch` each epoch's rows (loss, weight, bias); here those rows
are made by hand, so a test decides exactly when a loss blows up, when a stop comes or when a
pruner speaks. Below the lifecycle sits a real Tracker whose transport is ours
(`RecordingTransport`): it answers each request as the Session would and keeps every one, so the
tests read what the store would have been asked: each run's FinishRun (our Outcome, its tags,
metrics and model) and the epochs that reached it. How an Outcome becomes an MLflow status
(INTERRUPTED -> KILLED, ...) is the writer's, below the fake: it is not tested here.
"""

from __future__ import annotations

import math
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from omegaconf import open_dict

from linreg_exp.data import Splits, load
from linreg_exp.errors import TrackingError
from linreg_exp.jobspec import Job, JobResult
from linreg_exp.lifecycle import Lifecycle
from linreg_exp.schema import LinregConfig, typed
from linreg_exp.signals import Interrupted
from linreg_exp.tracking.messages import (
    Close,
    Closed,
    Epochs,
    Failed,
    Finished,
    FinishRun,
    Open,
    Opened,
    Reply,
    Request,
    Started,
    StartRun,
    Stored,
)
from linreg_exp.tracking.recorder import Tracker
from linreg_exp.vocab import Metric, Outcome, Tag
from tests.support.composing import hydra_config

EPOCHS = 6
REPORT_EVERY = 2  # with a pruner: rows report after epochs 2, 4 and 6 (epoch indices 1, 3, 5)
STEP = "autograd"  # the engine's kind, as job.py names it: every run's linreg.train_step
EXPERIMENT = "exp-1"
URI = "sqlite:///never-opened.db"  # the fake transport answers for it: no store exists


def run_id(key: str) -> str:
    return f"id-{key}"


def job_result(result: JobResult | Exception) -> JobResult:
    """A config's result that must be a JobResult (its exception shown if it is not)."""
    assert isinstance(result, JobResult), repr(result)
    return result


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# ---------------------------------------------------------------- the fake below the tracker


class RecordingTransport:
    """Our Transport, answering at once as a Session would, and keeping every request.

    `kept`: runs that a resumed sweep finished before (their metrics), answered as the store
    answers a StartRun of a FINISHED child. `fail_finish`: FinishRun is refused like this."""

    def __init__(
        self, kept: dict[str, dict[str, float]] | None = None, fail_finish: Failed | None = None
    ) -> None:
        self.kept = kept or {}
        self.fail_finish = fail_finish
        self.sent: list[Request] = []
        self.stopped = False  # stop_waiting was said
        self.closed = False
        self._lock = threading.Lock()  # the tracker's worker thread writes, the test reads

    def request(self, message: Request) -> Reply:
        with self._lock:
            self.sent.append(message)
        match message:
            case Open():
                return Opened(EXPERIMENT, None, resumed=bool(self.kept))
            case StartRun():
                kept = self.kept.get(message.run)
                return Started(message.run, run_id(message.run), EXPERIMENT, None, kept)
            case Epochs():
                return Stored(sum(len(batch.rows) for batch in message.batches))
            case FinishRun():
                return self.fail_finish or Finished(run_id(message.run))
            case Close():
                return Closed(None, None)
        raise AssertionError(f"not a request: {message!r}")  # pragma: no cover

    def stop_waiting(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True

    # ------------------------------------------------------------ what the store was asked

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self.sent)

    def finishes(self) -> dict[str, FinishRun]:
        """Each run's end, by key (each run is ended once: a second would overwrite)."""
        ends: dict[str, FinishRun] = {}
        for message in self.requests():
            if isinstance(message, FinishRun):
                assert message.run not in ends, f"run {message.run} ended twice"
                ends[message.run] = message
        return ends

    def logged(self, key: str, metric: str = Metric.LOSS) -> dict[int, float]:
        """A run's values of `metric` as the store keeps them, by step. A step sent again (a
        run's last epoch goes with its end, even when an earlier batch carried it) is skipped
        by the store; here it must at least be the same epoch, with the same values."""
        values: dict[int, float] = {}
        for message in self.requests():
            if not isinstance(message, Epochs):
                continue
            for batch in message.batches:
                if batch.run != key or metric not in batch.names:
                    continue
                at = batch.names.index(metric)
                for step, _, row in batch.rows:
                    if step in values:
                        assert same(values[step], row[at]), f"step {step} of {key} changed"
                        continue
                    values[step] = row[at]
        return values


@dataclass
class Program:
    """A Lifecycle of N configs over a Tracker whose transport is a RecordingTransport."""

    life: Lifecycle
    tracker: Tracker
    transport: RecordingTransport
    keys: list[str]

    def close(self) -> dict[str, FinishRun]:
        """Close the tracker (every request answered), then each run's end, by key."""
        if not self.transport.closed:
            self.tracker.close()
        return self.transport.finishes()


@dataclass
class FakePruner:
    """A pruner of our own (jobspec.Pruner): prunes `rows` at its first decision, keeps the
    rest, and remembers what it was asked and told."""

    rows: list[int]
    decisions: list[tuple[int, list[int], list[float]]] = field(default_factory=list)
    ends: dict[int, float | None] = field(default_factory=dict)
    fail_end: bool = False

    def decide(self, step: int, rows: list[int], values: list[float]) -> list[int]:
        self.decisions.append((step, list(rows), list(values)))
        return self.rows if len(self.decisions) == 1 else []

    def end(self, row: int, value: float | None) -> None:
        if self.fail_end:
            raise ConnectionError("the study's store is gone")
        self.ends[row] = value


# ---------------------------------------------------------------- fixtures and rows


@pytest.fixture(scope="module")
def cfg() -> LinregConfig:
    """The project's config, composed once by Hydra as `python -m linreg_exp` would, as the
    app receives it (without the `hydra` node): small data, few epochs, nothing drawn."""
    composed = hydra_config([
        f"trainer.epochs={EPOCHS}", f"sweep.report_every={REPORT_EVERY}", "plots.enabled=false",
        "mlflow.system_metrics=false", "data.num_data=200", "data.num_val=200",
    ])  # fmt: skip
    with open_dict(composed):
        del composed["hydra"]
    return typed(composed)  # as the engine reads it; shared by every test: none may change it


@pytest.fixture(scope="module")
def splits(cfg: LinregConfig, tmp_path_factory: pytest.TempPathFactory) -> Splits:
    launch = tmp_path_factory.mktemp("launch")
    job = Job(output_dir=launch, tracking_uri=URI, launch_dir=launch)
    return load(cfg.data, cfg.seed, launch, job.data_option)


@pytest.fixture
def programs(tmp_path: Path) -> Iterator[list[Program]]:
    """The programs a test starts (see `start`); each tracker a test left open is closed, and
    nothing may be left on disk."""
    made: list[Program] = []
    yield made
    for program in made:
        program.close()
        assert program.transport.closed
    assert list(tmp_path.iterdir()) == [], "no debris: plots are off, nothing is written"


def start(
    made: list[Program],
    cfg: LinregConfig,
    splits: Splits,
    out: Path,
    n: int,
    pruner: FakePruner | None = None,
    transport: RecordingTransport | None = None,
) -> Program:
    """N configs on one tracker, to start: one is a single run (key "run", the pruner its job's),
    more are a batched program's jobs 0..N-1 (keys "0".."N-1", the pruner the program's)."""
    transport = transport or RecordingTransport()
    tracker = Tracker(transport, Open(URI, "linreg", spool_dir=str(out)))
    if n == 1:
        entries = [(cfg, Job(output_dir=out, tracking_uri=URI, pruner=pruner), splits)]
        life = Lifecycle(entries, [tracker], "cpu", STEP)
    else:
        entries = [(cfg, Job(output_dir=out / str(i), tracking_uri=URI, number=i), splits)
                   for i in range(n)]  # fmt: skip
        life = Lifecycle(entries, [tracker], "cpu", STEP, pruner)
    program = Program(life, tracker, transport, ["run"] if n == 1 else [str(i) for i in range(n)])
    made.append(program)
    return program


def good(epoch: int, row: int = 0) -> tuple[float, float, float]:
    """A row that converges: its loss falls, its line nears y = 2x + 3 (the data's)."""
    shrink = 1.0 / (epoch + 1)
    return (5.0 * shrink + 0.1 * row, 2.0 - shrink + 0.01 * row, 3.0 - 2.0 * shrink)


def rows_of(epoch: int, n: int) -> list[tuple[float, float, float]]:
    return [good(epoch, row) for row in range(n)]


def feed(life: Lifecycle, epochs: range, n: int) -> list[bool]:
    """Hand the lifecycle these epochs' rows, as an engine does (it stops once no row trains);
    whether each `epoch` call left a row training."""
    going = []
    for epoch in epochs:
        going.append(bool(life.epoch(epoch, rows_of(epoch, n)).any()))
        if not going[-1]:
            break
    return going


def assert_no_model_no_scores(end: FinishRun) -> None:
    assert end.model is None
    assert Metric.FINAL_LOSS not in end.metrics and Metric.VAL_MSE not in end.metrics


# ---------------------------------------------------------------- completed


@pytest.mark.parametrize("n", [1, 3])
def test_runs_fed_all_their_epochs_complete_with_a_model_and_a_result(
    n: int, cfg: LinregConfig, splits: Splits, tmp_path: Path, programs: list[Program]
) -> None:
    program = start(programs, cfg, splits, tmp_path, n)
    life = program.life
    assert len(life.start()) == n
    with life.training():
        going = feed(life, range(EPOCHS), n)
    assert going == [True] * (EPOCHS - 1) + [False]  # the last epoch ends every row
    assert life.active.tolist() == [False] * n
    results = life.results()
    ends = program.close()
    assert sorted(ends) == sorted(program.keys)
    for row, key in enumerate(program.keys):
        end, result = ends[key], results[row]
        loss, weight, bias = good(EPOCHS - 1, row)
        assert end.outcome is Outcome.COMPLETED
        assert end.tags == {Tag.TRAIN_STEP: STEP}
        assert end.metrics[Metric.FINAL_LOSS] == loss
        assert end.metrics[Metric.FINAL_WEIGHT] == weight
        assert end.metrics[Metric.FINAL_BIAS] == bias
        assert {Metric.VAL_MSE, Metric.VAL_MAE, "train_seconds"} <= set(end.metrics)
        assert end.model == {"features": list(splits.features), "weights": [weight], "bias": bias}
        assert isinstance(result, JobResult)
        assert result == JobResult(Outcome.COMPLETED, run_id(key), end.metrics,
                                   end.metrics[Metric.VAL_MSE])  # fmt: skip
        assert program.transport.logged(key) == {e: good(e, row)[0] for e in range(EPOCHS)}
    kinds = [type(m).__name__ for m in program.transport.requests()]
    assert kinds[0] == "Open" and kinds[1 : 1 + n] == ["StartRun"] * n and kinds[-1] == "Close"
    assert not program.transport.stopped


def test_a_run_starts_with_its_config_as_params_and_no_system_metrics_sampler(
    cfg: LinregConfig, splits: Splits, tmp_path: Path, programs: list[Program]
) -> None:
    program = start(programs, cfg, splits, tmp_path, 1)
    program.life.start()
    program.close()
    (begun,) = [m for m in program.transport.requests() if isinstance(m, StartRun)]
    assert begun.run == "run" and not begun.system_metrics
    assert (
        begun.params["trainer.epochs"] == str(EPOCHS) and begun.params["device.resolved"] == "cpu"
    )
    assert begun.tags[Tag.DEVICE] == "cpu" and Tag.JOB_NUM not in begun.tags
    assert "hydra" not in begun.config  # the app's config: Hydra's own node is not the run's


# ---------------------------------------------------------------- diverged


@pytest.mark.parametrize(
    ("blown", "why"),
    [
        (1e6, r"diverged: loss 1e\+06 at epoch 2 exceeds 10000 x the first epoch's 5"),
        (math.inf, "diverged: loss became non-finite at epoch 2"),
        (math.nan, "diverged: loss became non-finite at epoch 2"),
    ],
    ids=["grown", "inf", "nan"],
)
def test_a_loss_that_blows_up_ends_the_run_diverged_at_its_epoch(
    blown: float,
    why: str,
    cfg: LinregConfig,
    splits: Splits,
    tmp_path: Path,
    programs: list[Program],
) -> None:
    assert cfg.trainer.divergence_factor == 10000.0  # the default the first case crosses
    program = start(programs, cfg, splits, tmp_path, 1)
    life = program.life
    life.start()
    with life.training():
        going = feed(life, range(2), 1)
        going.append(bool(life.epoch(2, [(blown, 9.0, 9.0)]).any()))
    assert going == [True, True, False]
    (result,) = life.results()
    end = program.close()["run"]
    assert end.outcome is Outcome.DIVERGED
    assert end.tags[Tag.DIVERGED_AT_EPOCH] == "2" and end.tags[Tag.TRAIN_STEP] == STEP
    assert re.fullmatch(why, end.tags[Tag.FAILURE]), end.tags[Tag.FAILURE]
    assert_no_model_no_scores(end)  # its blown-up line is no model
    assert "train_seconds" in end.metrics and "ols_weight" in end.metrics  # the yardsticks
    assert isinstance(result, JobResult)
    assert result == JobResult(Outcome.DIVERGED, run_id("run"), end.metrics, math.inf)
    assert sorted(program.transport.logged("run")) == [0, 1, 2]  # its last epoch too


def test_one_row_diverging_ends_only_that_row_and_the_others_go_on(
    cfg: LinregConfig, splits: Splits, tmp_path: Path, programs: list[Program]
) -> None:
    program = start(programs, cfg, splits, tmp_path, 3)
    life = program.life
    life.start()
    going = []
    with life.training():
        for epoch in range(EPOCHS):
            rows = rows_of(epoch, 3)
            if epoch == 2:
                rows[1] = (math.inf, 1e30, 1e30)
            elif epoch > 2:  # as engine.py hands a row that is gone: NaN, never read
                rows[1] = (math.nan, math.nan, math.nan)
            going.append(bool(life.epoch(epoch, rows).any()))
            if epoch == 2:
                assert life.active.tolist() == [True, False, True]
    assert going == [True] * (EPOCHS - 1) + [False]
    results = life.results()
    ends = program.close()
    assert ends["1"].outcome is Outcome.DIVERGED and ends["1"].tags[Tag.DIVERGED_AT_EPOCH] == "2"
    assert_no_model_no_scores(ends["1"])
    assert job_result(results[1]).outcome is Outcome.DIVERGED
    assert sorted(program.transport.logged("1")) == [0, 1, 2]  # nothing after its end
    for row, key in ((0, "0"), (2, "2")):
        assert (
            ends[key].outcome is Outcome.COMPLETED and Tag.DIVERGED_AT_EPOCH not in ends[key].tags
        )
        assert ends[key].model is not None
        assert job_result(results[row]).outcome is Outcome.COMPLETED
        assert sorted(program.transport.logged(key)) == list(range(EPOCHS))
    # it ended as soon as it diverged: before any later epoch of the others was sent
    sent = program.transport.requests()
    ended = next(i for i, m in enumerate(sent) if isinstance(m, FinishRun) and m.run == "1")
    later = [i for i, m in enumerate(sent) if isinstance(m, Epochs)
             and any(row[0] > 2 for batch in m.batches for row in batch.rows)]  # fmt: skip
    assert later and ended < min(later)


# ---------------------------------------------------------------- killed (interrupted)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize(
    ("stop", "stopped_by"),
    [
        (KeyboardInterrupt(), "SIGINT"),  # Ctrl-C without our handler
        (Interrupted(signal.SIGTERM), "SIGTERM"),
        (Interrupted(signal.SIGUSR2), "time limit"),  # submitit's warning, not under SLURM
    ],
    ids=["ctrl-c", "sigterm", "sigusr2"],
)
def test_a_stop_inside_training_ends_every_row_interrupted_with_its_epochs(
    n: int,
    stop: KeyboardInterrupt,
    stopped_by: str,
    cfg: LinregConfig,
    splits: Splits,
    tmp_path: Path,
    programs: list[Program],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    program = start(programs, cfg, splits, tmp_path, n)
    life = program.life
    life.start()
    with pytest.raises(type(stop)) as raised, life.training():
        feed(life, range(3), n)
        raise stop
    assert raised.value is stop  # the engine's caller sees the stop itself
    assert program.transport.stopped  # a store that does not answer is no longer waited for
    ends = program.close()
    assert sorted(ends) == sorted(program.keys)
    for row, key in enumerate(program.keys):
        end = ends[key]
        assert end.outcome is Outcome.INTERRUPTED
        assert end.tags == {Tag.TRAIN_STEP: STEP, Tag.STOPPED_BY: stopped_by}
        assert end.metrics == {} and end.model is None
        assert program.transport.logged(key) == {e: good(e, row)[0] for e in range(3)}
    of = " (0 of 3 configs done)" if n == 3 else ""
    assert f"linreg_exp: interrupted after 3 epochs{of}" in capsys.readouterr().err
    if isinstance(stop, Interrupted):  # our handler's: marked told, so no second line
        assert stop.told


def test_a_stop_keeps_the_outcome_of_a_row_that_had_already_ended(
    cfg: LinregConfig, splits: Splits, tmp_path: Path, programs: list[Program],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    program = start(programs, cfg, splits, tmp_path, 3)
    life = program.life
    life.start()
    with pytest.raises(KeyboardInterrupt), life.training():
        feed(life, range(1), 3)
        life.epoch(1, [good(1, 0), (math.nan, 0.0, 0.0), good(1, 2)])
        life.epoch(2, [good(2, 0), (math.nan, 0.0, 0.0), good(2, 2)])
        raise KeyboardInterrupt
    ends = program.close()
    assert ends["1"].outcome is Outcome.DIVERGED and Tag.STOPPED_BY not in ends["1"].tags
    assert ends["0"].outcome is ends["2"].outcome is Outcome.INTERRUPTED
    assert "interrupted after 3 epochs (1 of 3 configs done)" in capsys.readouterr().err


# ---------------------------------------------------------------- failed


@pytest.mark.parametrize("n", [1, 3])
def test_an_error_inside_training_ends_every_row_error_naming_it(
    n: int, cfg: LinregConfig, splits: Splits, tmp_path: Path, programs: list[Program]
) -> None:
    program = start(programs, cfg, splits, tmp_path, n)
    life = program.life
    life.start()
    error = RuntimeError("CUDA out of memory")
    with pytest.raises(RuntimeError) as raised, life.training():
        feed(life, range(2), n)
        raise error
    assert raised.value is error
    assert not program.transport.stopped  # an error is no stop: the store is waited for
    results = life.results()
    ends = program.close()
    for row, key in enumerate(program.keys):
        end = ends[key]
        assert end.outcome is Outcome.ERROR
        assert end.tags == {Tag.TRAIN_STEP: STEP, Tag.ERROR: "RuntimeError: CUDA out of memory"}
        assert end.metrics == {} and end.model is None
        assert program.transport.logged(key) == {e: good(e, row)[0] for e in range(2)}
        assert results[row] is error


def test_an_error_keeps_the_result_of_a_row_that_had_already_ended(
    cfg: LinregConfig, splits: Splits, tmp_path: Path, programs: list[Program]
) -> None:
    """A row stored as ended (here: diverged) is reported as it ended, not as the later error
    of the rows still training (a batched sweep's sweeper reads these results)."""
    program = start(programs, cfg, splits, tmp_path, 3)
    life = program.life
    life.start()
    error = RuntimeError("CUDA out of memory")
    with pytest.raises(RuntimeError), life.training():
        feed(life, range(1), 3)
        life.epoch(1, [good(1, 0), (math.nan, 0.0, 0.0), good(1, 2)])
        raise error
    results = life.results()
    ends = program.close()
    assert ends["1"].outcome is Outcome.DIVERGED
    assert job_result(results[1]).outcome is Outcome.DIVERGED
    assert results[0] is error and results[2] is error
    assert ends["0"].outcome is ends["2"].outcome is Outcome.ERROR


def test_an_engine_that_stops_early_ends_its_runs_error(
    cfg: LinregConfig, splits: Splits, tmp_path: Path, programs: list[Program]
) -> None:
    program = start(programs, cfg, splits, tmp_path, 3)
    life = program.life
    life.start()
    with life.training():
        assert feed(life, range(2), 3) == [True, True]  # and then it leaves
    results = life.results()
    ends = program.close()
    for row, key in enumerate(program.keys):
        assert ends[key].outcome is Outcome.ERROR
        assert ends[key].tags == {
            Tag.TRAIN_STEP: STEP,
            Tag.ERROR: "training stopped before its epochs",
        }
        assert ends[key].model is None
        assert program.transport.logged(key) == {e: good(e, row)[0] for e in range(2)}
        # its result is an error saying why, not "no outcome"
        assert isinstance(results[row], Exception)
        assert "training stopped before its epochs" in str(results[row])


@pytest.mark.parametrize(
    ("failed", "kind"),
    [(Failed("disk full", user_error=False), RuntimeError),
     (Failed("permission denied", user_error=True), TrackingError)],
)  # fmt: skip
def test_a_single_run_whose_end_the_store_refuses_gets_that_error(
    failed: Failed,
    kind: type[Exception],
    cfg: LinregConfig,
    splits: Splits,
    tmp_path: Path,
    programs: list[Program],
) -> None:
    transport = RecordingTransport(fail_finish=failed)
    program = start(programs, cfg, splits, tmp_path, 1, transport=transport)
    life = program.life
    life.start()
    with life.training():
        feed(life, range(EPOCHS), 1)
    (result,) = life.results()  # a single run waits for its end to be stored
    assert type(result) is kind and str(result) == failed.message
    assert program.close()["run"].outcome is Outcome.COMPLETED  # what it asked for


# ---------------------------------------------------------------- pruned


@pytest.mark.parametrize("n", [1, 3])
def test_a_row_the_pruner_names_ends_pruned_and_the_others_complete(
    n: int, cfg: LinregConfig, splits: Splits, tmp_path: Path, programs: list[Program]
) -> None:
    target = 0 if n == 1 else 1  # a single job's pruner comes with its Job
    pruner = FakePruner([target])
    program = start(programs, cfg, splits, tmp_path, n, pruner)
    life = program.life
    life.start()
    with life.training():
        going = feed(life, range(EPOCHS), n)
    assert going == ([True, False] if n == 1 else [True] * (EPOCHS - 1) + [False])
    results = life.results()
    ends = program.close()
    key = program.keys[target]
    pruned = ends[key]
    assert pruned.outcome is Outcome.PRUNED
    assert pruned.tags == {Tag.TRAIN_STEP: STEP, Tag.PRUNED_AT_EPOCH: "1"}
    assert pruned.model is None  # no candidate: no model
    assert pruned.metrics[Metric.FINAL_LOSS] == good(1, target)[0]
    assert Metric.VAL_MSE in pruned.metrics
    result = results[target]
    assert isinstance(result, JobResult)
    assert result == JobResult(Outcome.PRUNED, run_id(key), pruned.metrics, math.inf)
    assert sorted(program.transport.logged(key)) == [0, 1]
    # the first report: every row scored its objective at its second epoch, logged at step 1
    step, rows, scores = pruner.decisions[0]
    assert (step, rows) == (REPORT_EVERY, list(range(n)))
    for row, score in zip(rows, scores, strict=True):
        assert program.transport.logged(program.keys[row], Metric.VAL_MSE)[1] == score
    others = [row for row in range(n) if row != target]
    assert [d[:2] for d in pruner.decisions[1:]] == ([(4, others)] if others else [])
    for row in others:
        end, result = ends[program.keys[row]], results[row]
        assert end.outcome is Outcome.COMPLETED and end.model is not None
        assert job_result(result).outcome is Outcome.COMPLETED
        assert sorted(program.transport.logged(program.keys[row], Metric.VAL_MSE)) == [1, 3, 5]
    assert pruner.ends == {row: job_result(results[row]).objective for row in others}


def test_a_pruner_that_cannot_be_told_an_end_costs_the_run_nothing(
    cfg: LinregConfig, splits: Splits, tmp_path: Path, programs: list[Program]
) -> None:
    pruner = FakePruner([], fail_end=True)
    program = start(programs, cfg, splits, tmp_path, 3, pruner)
    life = program.life
    life.start()
    with life.training():
        feed(life, range(EPOCHS), 3)
    results = life.results()
    assert [job_result(r).outcome for r in results] == [Outcome.COMPLETED] * 3
    assert {end.outcome for end in program.close().values()} == {Outcome.COMPLETED}


# ---------------------------------------------------------------- kept (a resumed sweep)


def test_a_resumed_sweeps_finished_row_is_kept_and_the_rest_train_in_its_place(
    cfg: LinregConfig, splits: Splits, tmp_path: Path, programs: list[Program]
) -> None:
    kept = {Metric.VAL_MSE: 0.25, Metric.FINAL_LOSS: 0.5}
    program = start(programs, cfg, splits, tmp_path, 3, transport=RecordingTransport({"1": kept}))
    life = program.life
    assert [run.key for run in life.start()] == ["0", "2"]  # rows 0 and 1 of the engine
    with life.training():
        going = feed(life, range(EPOCHS), 2)
    assert going[-1] is False
    results = life.results()
    ends = program.close()
    assert sorted(ends) == ["0", "2"]  # the kept run is not ended again
    assert results[1] == JobResult(Outcome.COMPLETED, run_id("1"), kept, 0.25, kept=True)
    for row, key in ((0, "0"), (1, "2")):  # the engine's rows, the runs' keys
        assert ends[key].metrics[Metric.FINAL_LOSS] == good(EPOCHS - 1, row)[0]
        assert job_result(results[int(key)]).outcome is Outcome.COMPLETED
