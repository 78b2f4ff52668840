"""The console's progress line: plain lines now and then where the console is not a terminal,
nothing for a short program (a fake clock of our own, in milliseconds)."""

from __future__ import annotations

import io

from linreg_exp.progress import Progress, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_durations_read_as_a_person_writes_them() -> None:
    assert [duration(s) for s in (0, 42, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]


def test_a_log_gets_a_plain_line_now_and_then_with_no_control_characters() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(total_epochs=128_000, configs=256, stream=out, clock=clock, every=30)
    for second in range(1, 91):
        clock.now = 100.0 + second
        progress.update(1_000, done=second // 10, pruned=second // 30)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 2 s (after the quiet start), then every 30 s
    assert lines[-1] == (
        "linreg_exp: 62,000 of 128,000 epochs (48%), 1,000 epochs/s, 1m06s left; "
        "6 of 256 configs done, 2 pruned"
    )
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_short_program_shows_nothing() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(total_epochs=500, configs=1, stream=out, clock=clock)
    for epoch in range(500):
        clock.now = 100.0 + epoch * 0.001
        progress.update(1, done=0)
    progress.close()
    assert out.getvalue() == ""


def test_one_config_says_no_config_counts() -> None:
    progress = Progress(total_epochs=1000, configs=1, stream=io.StringIO(), clock=Clock())
    progress.update(250, done=0)
    assert "configs" not in progress.line(101.0)
