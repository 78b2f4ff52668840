"""The History: a bounded, evenly spaced sample of any run's trajectory."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from linreg_exp.history import History


def filled(epochs: int, capacity: int) -> History:
    history = History(capacity=capacity)
    for epoch in range(epochs):
        history.append({"loss": float(epoch), "weight": 2.0 * epoch, "bias": 3.0 * epoch})
    return history


def test_a_short_run_keeps_every_epoch() -> None:
    history = filled(500, capacity=4096)
    assert history.epochs == list(range(500)) and history.stride == 1
    assert history.series("loss") == [float(e) for e in range(500)]
    assert history.epochs_done == 500 and history.final["loss"] == 499.0
    assert history.final["weight"] == 998.0 and history.final["bias"] == 1497.0


@settings(deadline=None)  # a busy test machine can pause any example past the 200 ms default
@given(epochs=st.integers(1, 5000), capacity=st.integers(4, 64))
def test_a_long_run_keeps_a_bounded_even_sample_with_both_ends(epochs: int, capacity: int) -> None:
    history = filled(epochs, capacity)
    assert len(history.sample) < capacity
    steps = history.trajectory().epochs
    assert steps[0] == 0 and steps[-1] == epochs - 1
    inner = history.epochs
    assert all(b - a == history.stride for a, b in itertools.pairwise(inner))
    assert inner[-1] > epochs - 1 - history.stride  # no gap longer than the stride at the end
    for epoch, (loss, weight, bias) in history.trajectory().sample:
        assert (loss, weight, bias) == (float(epoch), 2.0 * epoch, 3.0 * epoch)
