"""The error and exit policy, in-process: each kind of error the command can end with (errors.py,
signals.py, Hydra's and OmegaConf's) -> the one line the user sees and the exit code, through
app.report, the one policy. Bad input comes from Hydra's real compose and the schema's checks on
the project's conf dir, as `python -m linreg_exp` meets it; tests/test_reliability.py keeps one
end-to-end run per path (composition, range check, store, sweep, --cfg) to show nothing else
(no run, no output dir) is left behind.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException
from submitit.core.utils import UncompletedJobError

from linreg_exp import app, signals
from linreg_exp.errors import Abort, ConfigError, Diverged, LinregError, TrackingError
from linreg_exp.schema import validate
from tests.conftest import CONF_DIR


def reported(error: BaseException, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """The exit code and the non-empty stderr lines `report` gives for `error`."""
    code = app.report(error)
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, [line for line in captured.err.splitlines() if line.strip()]


def composition_error(*overrides: str) -> BaseException:
    """What composing and checking these overrides raises, as a run meets it."""
    app.register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        try:
            validate(compose("config", overrides=list(overrides)))
        except (HydraException, OmegaConfBaseException, LinregError) as error:
            return error
    raise AssertionError(f"{overrides} composed and passed the checks")


# Bad input: (overrides, the error line). Each is one line naming the key, exit status 2.
BAD_INPUT = [
    # Hydra's composition: an option, a key, a type
    (["loss=l3"], "error: loss=l3 is not an option; allowed: huber, l1, mse"),
    (["device=tpu"], "error: device=tpu is not an option; allowed: auto, cpu, cuda"),
    (["optimizer=rmsprop"], "error: optimizer=rmsprop is not an option; allowed: adam, sgd"),
    (["optimizer.lrr=0.1"],
     "error: optimizer.lrr is not a config key; allowed keys in optimizer: lr, momentum, "
     "dampening, weight_decay, nesterov"),
    (["data.num_dat=10"], "error: data.num_dat is not a config key; allowed keys in data: "),
    (["optimizer.lr=abc"], "error: optimizer.lr=abc: "),
    (["data.num_data=1.5"], "error: data.num_data=1.5: "),
    (["trainer.epochs=many"], "error: trainer.epochs=many: "),
    # the schema's range checks
    (["optimizer.lr=0"], "error: optimizer.lr=0.0 is not allowed: must be > 0"),
    (["optimizer.lr=-0.1"], "error: optimizer.lr=-0.1 is not allowed: must be > 0"),
    (["data.noise_std=-1"], "error: data.noise_std=-1.0 is not allowed: must be >= 0"),
    (["data.num_data=1"], "error: data.num_data=1 is not allowed: must be an integer >= 2"),
    (["trainer.epochs=0"], "error: trainer.epochs=0 is not allowed: must be an integer >= 1"),
    (["data.x_min=10"],
     "error: data.x_min=10.0 is not allowed: must be < data.x_max=10.0"),
    (["trainer.batch_size=0"], "error: trainer.batch_size=0 is not allowed: "),
    (["trainer.batch_size=1001"],
     "error: trainer.batch_size=1001 is not allowed: must be null (full batch) or an integer in "
     "[1, data.num_data=1000]"),
    (["+optimizer.foo=1"], "error: optimizer.foo=1 is not allowed: unknown key; allowed: "),
    (["sweep.pruner=asap"],
     "error: sweep.pruner=asap is not allowed: one of none, median, asha, hyperband"),
    # a sweep's values without -m: the user meant a sweep
    (["optimizer.lr=0.01,0.5"],
     "error: 'optimizer.lr=0.01,0.5' lists several values: add -m (--multirun) to sweep over "
     "them"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "line"), BAD_INPUT, ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_the_key_and_exit_2(
    capsys: pytest.CaptureFixture[str], overrides: list[str], line: str
) -> None:
    code, lines = reported(composition_error(*overrides), capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(line), lines
    assert "Traceback" not in lines[0]


@pytest.mark.parametrize(("group", "option"), list(app.EXTRAS), ids=lambda v: str(v))
def test_a_missing_extra_says_which_to_install(
    capsys: pytest.CaptureFixture[str], group: str, option: str
) -> None:
    """What Hydra raises for an option of a plugin whose extra is not installed (this venv has
    them all: the error is built as Hydra builds it)."""
    missing = MissingConfigException(
        f"Could not find '{group}/{option}'", missing_cfg_file=f"{group}/{option}",
        options=["basic", "batched"],
    )  # fmt: skip
    code, lines = reported(missing, capsys)
    extra = app.EXTRAS[group, option]
    assert code == 2 and lines == [
        f"error: {group}={option} is not an option; allowed: basic, batched; "
        f"{group}={option} comes with an extra: pip install 'linreg_exp[{extra}]'"
    ]


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ConfigError("optimizer.lr=0.0 is not allowed: must be > 0"),
         "error: optimizer.lr=0.0 is not allowed: must be > 0"),
        (TrackingError("mlflow.tracking_uri=foo://bar: cannot open the tracking store: x"),
         "error: mlflow.tracking_uri=foo://bar: cannot open the tracking store: x"),
        (LinregError("hydra.callbacks: linreg_exp's launch callback is missing"),
         "error: hydra.callbacks: linreg_exp's launch callback is missing"),
        (PermissionError(13, "Permission denied", "/sys/outputs"),
         "error: cannot write /sys/outputs: Permission denied (run from a directory you can "
         "write to, or set hydra.run.dir and mlflow.tracking_uri)"),
    ],
    ids=lambda e: type(e).__name__ if isinstance(e, BaseException) else "",
)  # fmt: skip
def test_a_users_error_is_its_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], error: BaseException, line: str
) -> None:
    assert reported(error, capsys) == (2, [line])


def test_a_job_the_scheduler_ended_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """submitit's report of a cancelled job: what it says before the job's error stream."""
    error = UncompletedJobError(
        "Job 42 (task: 0) with path /s/.submitit/42/42_0_result.pkl\nhas not produced any output "
        "(state: CANCELLED)\nError stream produced:\n----------------------------------------\n"
        "slurmstepd: error: *** JOB 42 CANCELLED ***\n"
    )
    code, lines = reported(error, capsys)
    assert code == 1 and lines == [
        "error: Job 42 (task: 0) with path /s/.submitit/42/42_0_result.pkl has not produced any "
        "output (state: CANCELLED)"
    ]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (signals.Interrupted(signal.SIGINT), 130),
        (signals.Interrupted(signal.SIGTERM), 143),
        (signals.Interrupted(signal.SIGUSR2), 128 + signal.SIGUSR2),  # submitit's warning
        (KeyboardInterrupt(), 130),  # Ctrl-C before our handler was installed
    ],
    ids=["SIGINT", "SIGTERM", "SIGUSR2", "KeyboardInterrupt"],
)
def test_a_stop_is_one_line_and_128_plus_the_signal(
    capsys: pytest.CaptureFixture[str], error: BaseException, code: int
) -> None:
    assert reported(error, capsys) == (code, ["linreg_exp: interrupted"])
    assert signals.exit_code_for(error) == code


def test_a_stop_the_job_has_told_of_adds_no_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Stopped while training, the job said `interrupted after N epochs`: that is the one line."""
    error = signals.Interrupted(signal.SIGINT)
    error.told = True
    assert reported(error, capsys) == (130, [])


def test_a_bug_shows_its_traceback_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    for bug in (RuntimeError("boom"), OSError("no file named")):  # an OSError naming no file
        try:
            raise bug
        except Exception as error:
            assert app.report(error) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and f"error: {type(bug).__name__}: {bug}" in err
        assert err.rstrip().endswith("(set HYDRA_FULL_ERROR=1 for the complete stack trace)")


def test_a_diverged_single_run_exits_3_and_adds_no_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its summary already said where it diverged; the status tells a script it did not train."""
    assert reported(Diverged("run abc diverged"), capsys) == (3, [])


def test_abort_carries_the_error_it_wraps() -> None:
    """What must stop the whole command travels past Hydra as a BaseException, keeping the
    error that the policy then reports."""
    inner = TrackingError("mlflow.tracking_uri=x: cannot open the tracking store")
    abort = Abort(inner)
    assert abort.error is inner and str(abort) == str(inner)
    assert not isinstance(abort, Exception)  # Hydra turns an Exception into a warning


# ---- the command, in this process: run_hydra's choice between the policy and a traceback


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> Iterator[None]:
    """Run `python -m linreg_exp` as a function here: its own argv and launch dir, and Hydra's
    global state, logging setup and HYDRA_FULL_ERROR put back after."""
    monkeypatch.chdir(tmp_path)
    full_error = os.environ.pop("HYDRA_FULL_ERROR", None)  # run_hydra sets it
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None  # set by a run that got as far as its job
    root.handlers[:], root.level = handlers, level
    os.environ.pop("HYDRA_FULL_ERROR", None)
    if full_error is not None:
        os.environ["HYDRA_FULL_ERROR"] = full_error


@pytest.mark.usefixtures("in_process")
def test_bad_input_is_reported_by_the_policy_and_nothing_is_left(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["linreg_exp", "optimizer.lr=-1", "hydra.run.dir=run"])
    assert app.run_hydra() == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: optimizer.lr=-1.0 is not allowed: must be > 0"]
    assert os.listdir(tmp_path) == []


@pytest.mark.usefixtures("in_process")
def test_hydra_full_error_raises_the_error_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """HYDRA_FULL_ERROR=1 (the user's): the error, not one line, so Python prints its traceback."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["linreg_exp", "optimizer.lr=-1", "hydra.run.dir=run"])
    with pytest.raises(ConfigError, match=r"^optimizer\.lr=-1\.0 is not allowed"):
        app.run_hydra()


@pytest.mark.usefixtures("in_process")
def test_cfg_job_checks_before_it_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--cfg job` with a value a run would reject: its one line, and no config above it."""
    monkeypatch.setattr(sys, "argv", ["linreg_exp", "optimizer.lr=-1", "--cfg", "job"])
    assert app.run_hydra() == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["error: optimizer.lr=-1.0 is not allowed: must be > 0"]


@pytest.mark.usefixtures("in_process")
def test_a_single_run_that_diverges_exits_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    """The whole command in this process: the run trains, diverges, is recorded, and exits 3."""
    store = f"sqlite:///{os.path.join(tmp_path, 'mlflow.db')}"
    monkeypatch.setattr(sys, "argv", [
        "linreg_exp", "loss=mse", "optimizer.lr=5", "trainer.epochs=20", "plots.enabled=false",
        "mlflow.system_metrics=false", "hydra.run.dir=run", f"mlflow.tracking_uri={store}",
    ])  # fmt: skip
    assert app.run_hydra() == Diverged.EXIT_CODE
    assert "DIVERGED" in capsys.readouterr().out  # its summary, where the run summaries go
