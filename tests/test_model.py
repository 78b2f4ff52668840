"""A run's MLflow model (tracking/model.py, tracking/fitted_line.py): a linear model over named
columns.

First `predict` alone (no MLflow store, milliseconds), then models logged into a real SQLite
store and loaded back with `mlflow.pyfunc.load_model`, so MLflow's own schema enforcement runs
before `predict`, as it does for a user, and MLflow's own request parsing
(`mlflow.models.validate_serving_input`, what `mlflow models serve` does with a request body).
The end-to-end `mlflow models serve` test is in test_server.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import Model, validate_serving_input
from mlflow.pyfunc.model import PythonModelContext
from mlflow.tracking import MlflowClient

from linreg_exp.tracking import model
from linreg_exp.tracking.fitted_line import LinearModel
from linreg_exp.tracking.messages import LinearModelSpec

LINE = LinearModelSpec(features=["x"], weights=[2.0], bias=3.0)  # y = 2x + 3
PLANE = LinearModelSpec(features=["a", "b", "c"], weights=[1.0, 10.0, 100.0], bias=0.5)

# the four request bodies `mlflow models serve` takes for a one-feature model, each for x = 1, -4
REQUESTS_D1 = {
    "inputs 1-D": {"inputs": [1.0, -4.0]},
    "inputs 2-D": {"inputs": [[1.0], [-4.0]]},
    "dataframe_split": {"dataframe_split": {"columns": ["x"], "data": [[1.0], [-4.0]]}},
    "dataframe_records": {"dataframe_records": [{"x": 1.0}, {"x": -4.0}]},
}
EXPECTED_D1 = [5.0, -5.0]


def unit(spec: LinearModelSpec) -> LinearModel:
    """The model as MLflow makes it from code: `load_context` with its config."""
    made = LinearModel()
    context = PythonModelContext(artifacts={}, model_config=dict(spec))  # type: ignore[no-untyped-call]
    made.load_context(context)
    return made


# ---------------------------------------------------------------- predict alone


def test_columns_are_taken_by_name_and_extra_ones_are_ignored() -> None:
    table = pd.DataFrame({"z": [100.0, 100.0], "x": [1.0, -4.0], "foo": ["a", "b"]})
    assert unit(LINE).predict(table) == EXPECTED_D1
    shuffled = pd.DataFrame({"c": [1.0, 0.0], "z": [7.0, 7.0], "b": [0.0, 1.0], "a": [1.0, 0.0]})
    assert unit(PLANE).predict(shuffled) == pytest.approx([101.5, 10.5])


def test_a_missing_column_is_named_with_the_expected_ones() -> None:
    with pytest.raises(MlflowException, match=r"no column 'c'.*\['a', 'b', 'c'\]"):
        unit(PLANE).predict(pd.DataFrame({"a": [1.0], "b": [2.0], "z": [3.0]}))


def test_integers_are_numbers_and_strings_are_not() -> None:
    assert unit(LINE).predict(pd.DataFrame({"x": [1, -4]})) == EXPECTED_D1
    assert unit(LINE).predict(pd.DataFrame({"x": np.array([1, -4], dtype=np.int8)})) == [5, -5]
    with pytest.raises(MlflowException, match="column 'x' must hold numbers"):
        unit(LINE).predict(pd.DataFrame({"x": ["1", "2"]}))
    with pytest.raises(MlflowException, match="column 'x' must hold numbers"):
        unit(LINE).predict(pd.DataFrame({"x": [True, False]}))


def test_a_one_feature_model_takes_a_bare_list_and_rows_of_one() -> None:
    line = unit(LINE)
    assert line.predict([1.0, -4.0]) == EXPECTED_D1  # type: ignore[arg-type]
    assert line.predict([[1], [-4]]) == EXPECTED_D1  # type: ignore[arg-type]
    # one column of one-element rows: how MLflow hands over {"inputs": [[1.0], [-4.0]]}
    assert line.predict(pd.DataFrame({"x": [[1.0], [-4.0]]})) == EXPECTED_D1
    with pytest.raises(MlflowException, match="one number a row"):
        line.predict(pd.DataFrame({"x": [[1.0, 2.0], [-4.0, 0.0]]}))
    with pytest.raises(MlflowException, match=r"a 3-feature model takes a table"):
        unit(PLANE).predict([[1.0, 2.0, 3.0]])  # type: ignore[arg-type]


def test_a_config_with_a_weight_per_feature_is_required() -> None:
    with pytest.raises(ValueError, match="2 features but 1 weights"):
        unit(LinearModelSpec(features=["a", "b"], weights=[1.0], bias=0.0))


# ---------------------------------------------------------------- logged, loaded, enforced


def logged(tmp_path: Path, spec: LinearModelSpec) -> str:
    """`spec` logged as a run's model in a real SQLite store under tmp_path; its models:/ URI."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    experiment_id = client.create_experiment("models", str(tmp_path / "artifacts"))
    run = client.create_run(experiment_id)
    model_id = model.log_model(client, experiment_id, run.info.run_id, spec)
    client.set_terminated(run.info.run_id)
    mlflow.set_tracking_uri(store)  # where models:/ URIs are looked up
    return f"models:/{model_id}"


@pytest.fixture
def tracking_uri_restored() -> Iterator[None]:
    before = mlflow.get_tracking_uri()
    yield None
    mlflow.set_tracking_uri(before)


@pytest.mark.usefixtures("tracking_uri_restored")
def test_a_logged_one_feature_model_checks_its_input_after_mlflows_enforcement(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = logged(tmp_path, LINE)
    loaded = mlflow.pyfunc.load_model(uri)
    assert str(loaded.metadata.signature.inputs) == "['x': Any (required)]"
    with caplog.at_level(logging.WARNING, logger="mlflow"):
        assert loaded.predict(pd.DataFrame({"z": [100.0, 100.0], "x": [1.0, -4.0]})) == [5, -5]
    assert loaded.predict(pd.DataFrame({"x": [1, -4]})) == EXPECTED_D1  # int64 passes
    assert loaded.predict({"x": [1.0, -4.0]}) == EXPECTED_D1
    with pytest.raises(MlflowException, match=r"missing inputs \['x'\]"):
        loaded.predict(pd.DataFrame({"foo": [1.0]}))
    with pytest.raises(MlflowException, match="column 'x' must hold numbers"):
        loaded.predict(pd.DataFrame({"x": ["a"]}))
    local = mlflow.artifacts.download_artifacts(uri)
    example = Model.load(local).load_input_example(local)
    assert isinstance(example, pd.DataFrame) and list(example.columns) == ["x"]
    for name, body in REQUESTS_D1.items():
        assert validate_serving_input(uri, json.dumps(body)) == EXPECTED_D1, name


@pytest.mark.usefixtures("tracking_uri_restored")
def test_a_logged_three_feature_model_answers_both_dataframe_forms(tmp_path: Path) -> None:
    uri = logged(tmp_path, PLANE)
    loaded = mlflow.pyfunc.load_model(uri)
    assert str(loaded.metadata.signature.inputs) == (
        "['a': Any (required), 'b': Any (required), 'c': Any (required)]"
    )
    split = {"dataframe_split": {"columns": ["c", "z", "a", "b"],
                                 "data": [[1, 9, 1.0, 0], [0, 9, 0, 1]]}}  # fmt: skip
    records = {"dataframe_records": [{"a": 1, "b": 0, "c": 1.0}, {"b": 1, "a": 0, "c": 0}]}
    for body in (split, records):
        assert validate_serving_input(uri, json.dumps(body)) == pytest.approx([101.5, 10.5])
    table = pd.DataFrame({"c": [1, 0], "a": [1.0, 0.0], "b": [0, 1]})
    assert loaded.predict(table) == pytest.approx([101.5, 10.5])
    with pytest.raises(MlflowException, match=r"missing inputs \['c'\]"):
        validate_serving_input(uri, json.dumps({"dataframe_records": [{"a": 1, "b": 0}]}))
