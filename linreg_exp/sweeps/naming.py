"""Run names from what a sweep varies: `lr=0.005 loss=l1` for a job, `sweep lr=0.005,0.02
loss=l1,mse` for its parent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser


def split(override: str) -> tuple[str, str]:
    """`+optimizer.lr=0.1` -> (`optimizer.lr`, `0.1`)."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def swept_values(overrides: Sequence[str], sweeper_params: Mapping[str, object]) -> dict[str, str]:
    """What a multirun varies, as typed: `optimizer.lr` -> `0.005,0.02` (the sweeper's own
    search space too, such as Optuna's `params`)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    swept = dict(split(str(o.input_line)) for o in parsed if o.is_sweep_override())
    return swept | {str(key): str(value) for key, value in sweeper_params.items()}


# Sections that hold how a run is recorded and drawn, not what it trains: their keys' last parts
# (`enabled`, `frames`, `objective`) say nothing alone, so such a key keeps its whole name.
WHOLE_KEYS = ("plots.", "mlflow.", "sweep.", "hydra.")


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """`optimizer.lr` -> `lr`, unless another key ends the same way; `plots.enabled` stays
    whole (WHOLE_KEYS)."""
    last = [key.rpartition(".")[2] for key in keys]
    return {
        key: tail if last.count(tail) == 1 and not key.startswith(WHOLE_KEYS) else key
        for key, tail in zip(keys, last, strict=True)
    }


def describe(values: Mapping[str, str]) -> str:
    """`lr=0.005 loss=l1`: short and, within a sweep, unique."""
    short = short_names(list(values))
    return " ".join(f"{short[key]}={value}" for key, value in values.items())


def sweep_name(swept: Mapping[str, str]) -> str:
    return f"sweep {describe(swept)}".strip()


def single_name(overrides: Sequence[str]) -> str:
    """A single run's name: its overrides (but where it is tracked), or "default"."""
    values = dict(split(o) for o in overrides)
    return describe({k: v for k, v in values.items() if not k.startswith("mlflow.")}) or "default"


def job_name(overrides: Sequence[str], swept_keys: Sequence[str]) -> str | None:
    """A sweep job's run name: its values of the swept keys (None: MLflow's generated name)."""
    mine = dict(split(o) for o in overrides)
    return describe({key: mine[key] for key in swept_keys if key in mine}) or None
