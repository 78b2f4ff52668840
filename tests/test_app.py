"""The one error policy (app.report): every error the command can end with, as the user sees
it and as its exit code."""

from __future__ import annotations

import signal

import pytest
from hydra.errors import MissingConfigException

from linreg_exp import app
from linreg_exp.errors import ConfigError, TrackingError
from linreg_exp.signals import Interrupted

ONE_LINE = [
    (ConfigError("optimizer.lr=0.0 is not allowed: must be > 0"), 2),
    (TrackingError("mlflow.tracking_uri=foo://bar: cannot open the tracking store: x"), 2),
    (MissingConfigException("...", missing_cfg_file="loss/l3", options=["l1", "mse"]), 2),
]


@pytest.mark.parametrize(("error", "code"), ONE_LINE, ids=lambda e: type(e).__name__)
def test_bad_input_is_one_error_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], error: Exception, code: int
) -> None:
    assert app.report(error) == code
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert lines[0] != "error: " and "Traceback" not in lines[0]


def test_a_missing_option_names_the_group_and_what_is_allowed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app.report(MissingConfigException("...", missing_cfg_file="loss/l3", options=["mse", "l1"]))
    assert capsys.readouterr().err.strip() == "error: loss=l3 is not an option; allowed: l1, mse"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_exits_128_plus_its_number(
    capsys: pytest.CaptureFixture[str], signum: int
) -> None:
    assert app.report(Interrupted(signum)) == 128 + signum
    assert capsys.readouterr().err.strip() == "linreg_exp: interrupted"


def test_a_bug_shows_its_traceback_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        assert app.report(error) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "error: RuntimeError: boom" in err and "HYDRA_FULL_ERROR" in err
