"""The data a run trains and is scored on: the tutorial's synthetic points, or a table of yours.

Synthetic (`data=default`): x ~ U(x_min, x_max) in each of `num_features` columns, noise ~
N(0, noise_std) a point, y = w·(x + noise) + b (the same noise on every feature: for one feature,
exactly the tutorial's y = w·(x + noise) + b, bit for bit). The held-out points come from a random
stream of their own, so the training data stay the same whatever `num_val` is.

A table (`data=csv` or `data=parquet`): `target` against `features` (default: every other numeric
column), split into training and held-out rows by `seed` (`val_fraction`), or held out in a file of
its own (`val_path`). Every way a table can be unusable is a ConfigError naming the key.

Either way the result is a `Splits`: two Datasets (x: [n, d] float32, y: [n, 1]) with their
feature names, and a lineage record (what the data is, and a digest that changes with it).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from linreg_exp.errors import ConfigError
from linreg_exp.schema import DataConfig, TableConfig

if TYPE_CHECKING:
    import pandas as pd

# Reading a table takes about this many times its file's size in memory at its peak (pandas'
# parser, then the float32 tensors): benchmarks' memory question measures it (docs/performance.md)
READ_MEMORY_FACTOR = {"csv": 3.0, "parquet": 8.0}


@dataclass(frozen=True)
class Dataset:
    x: torch.Tensor  # (rows, features)
    y: torch.Tensor  # (rows, 1)
    features: tuple[str, ...] = ("x",)

    def to(self, device: torch.device) -> Dataset:
        return Dataset(self.x.to(device), self.y.to(device), self.features)

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    def sample(self, max_points: int) -> tuple[np.ndarray, np.ndarray]:
        """Every k-th point as numpy arrays (x: [k, d], y: [k]), at most about `max_points`."""
        step = max(1, self.x.shape[0] // max_points)
        return self.x[::step].cpu().numpy(), self.y[::step].flatten().cpu().numpy()


@dataclass(frozen=True)
class Splits:
    """A run's data: what it trains on, what scores it, and where both came from."""

    train: Dataset
    val: Dataset
    name: str  # the MLflow dataset's name
    digest: str  # changes whenever the data would
    source: dict[str, Any]  # what the data is, as the run records it (JSON values)

    @property
    def features(self) -> tuple[str, ...]:
        return self.train.features


def load(cfg: DataConfig | TableConfig, seed: int, launch_dir: Path, option: str) -> Splits:
    """The run's data from its config (`option`: the data group's choice, which names it)."""
    if isinstance(cfg, TableConfig):
        return load_table(cfg, seed, launch_dir, option)
    train, val = make_dataset(cfg, seed), make_dataset(cfg, seed, held_out=True)
    source = {"data": _plain(cfg), "seed": seed}
    return Splits(train, val, f"linreg_{option}", _digest(source), source)


# ---------------------------------------------------------------- synthetic


def synthetic_features(count: int) -> tuple[str, ...]:
    return ("x",) if count == 1 else tuple(f"x{i}" for i in range(1, count + 1))


def true_weights(cfg: DataConfig) -> list[float]:
    """`true_weight` as one number a feature (a single number is every feature's)."""
    weight = cfg.true_weight
    if isinstance(weight, int | float):
        return [float(weight)] * cfg.num_features
    return [float(w) for w in weight]


def make_dataset(cfg: DataConfig, seed: int, held_out: bool = False) -> Dataset:
    """Generate on the CPU from its own generator, so the data is the same on every device.

    `held_out`: `num_val` points from the same distribution, drawn from a random stream of their
    own, so the training data (and the tutorial's numbers) stay the same whatever `num_val` is."""
    generator = torch.Generator().manual_seed(held_out_seed(seed) if held_out else seed)
    num, d = (cfg.num_val if held_out else cfg.num_data), cfg.num_features
    x = torch.rand(num, d, generator=generator) * (cfg.x_max - cfg.x_min) + cfg.x_min
    noise = torch.randn(num, 1, generator=generator).mul_(cfg.noise_std)
    weights = true_weights(cfg)
    if d == 1:  # the tutorial's arithmetic, in place (8 bytes a point), bit for bit
        y = noise.add_(x).mul_(weights[0]).add_(cfg.true_bias)
    else:
        y = (x + noise) @ torch.tensor(weights).view(d, 1) + cfg.true_bias
    return Dataset(x, y, synthetic_features(d))


def held_out_seed(seed: int) -> int:
    """The held-out stream's seed: a hash of the run's, so its points are unrelated to the
    training points of this or any nearby seed."""
    digest = hashlib.sha256(f"linreg_exp held-out {seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ---------------------------------------------------------------- tables


def resolve(path: str, launch_dir: Path) -> Path:
    """A relative path is the user's, from where they launched, not from Hydra's run dir."""
    given = Path(path).expanduser()
    return given if given.is_absolute() else launch_dir / given


def load_table(cfg: TableConfig, seed: int, launch_dir: Path, option: str) -> Splits:
    """A table's splits. The table is read once a process (the configs of a sweep share it, and
    the memory it takes), and read again when its file changes."""
    main = _stamp(resolve(cfg.path, launch_dir), "data.path")
    held = None if cfg.val_path is None else _stamp(resolve(cfg.val_path, launch_dir),
                                                    "data.val_path")  # fmt: skip
    features = None if cfg.features is None else tuple(str(f) for f in cfg.features)
    table = _table(main, cfg.format, "data.path", cfg.target, features)
    source: dict[str, Any] = {
        "path": str(main[0]), "format": cfg.format, "sha256": table.sha, "rows": table.rows,
        "columns": list(table.columns), "target": cfg.target, "features": list(table.features),
    }  # fmt: skip
    if held is not None:
        val_table = _table(held, cfg.format, "data.val_path", cfg.target, table.features)
        train = Dataset(table.x, table.y, table.features)
        val = Dataset(val_table.x, val_table.y, table.features)
        source["split"] = {"val_path": str(held[0]), "sha256": val_table.sha,
                           "rows": val_table.rows}  # fmt: skip
    else:
        val_rows = round(cfg.val_fraction * table.rows)
        if val_rows < 1 or val_rows >= table.rows:
            which = "validation" if val_rows < 1 else "training"
            raise ConfigError(
                f"data.val_fraction={cfg.val_fraction} leaves an empty {which} split of "
                f"{main[0].name}'s {table.rows} rows; allowed: a fraction that keeps >= 1 row "
                "in each"
            )
        order = torch.randperm(table.rows, generator=torch.Generator().manual_seed(seed))
        val_index, train_index = order[:val_rows].sort().values, order[val_rows:].sort().values
        train = Dataset(table.x[train_index], table.y[train_index], table.features)
        val = Dataset(table.x[val_index], table.y[val_index], table.features)
        source["split"] = {"val_fraction": cfg.val_fraction, "seed": seed,
                           "train_rows": train.rows, "val_rows": val.rows}  # fmt: skip
    return Splits(train, val, f"linreg_{option}_{main[0].stem}", _digest(source), source)


_Stamp = tuple[Path, int, int]  # a file, its mtime (ns) and size: a changed file is read again


def _stamp(path: Path, key: str) -> _Stamp:
    if not path.is_file():
        raise ConfigError(f"{key}={path}: no such file")
    stat = path.stat()
    return path, stat.st_mtime_ns, stat.st_size


@dataclass(frozen=True)
class _Table:
    """A table's target and features as float32 tensors (the rest of it is not kept)."""

    x: torch.Tensor
    y: torch.Tensor
    features: tuple[str, ...]
    columns: tuple[str, ...]
    sha: str  # of its file's bytes

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


@functools.lru_cache(maxsize=2)
def _table(
    stamp: _Stamp, fmt: str, key: str, target: str, features: tuple[str, ...] | None
) -> _Table:
    path = stamp[0]
    frame, sha = _read(stamp, fmt, key)
    wanted = None if features is None else list(features)
    target, chosen = _columns(frame, TableConfig(fmt, str(path), target, wanted), path, key)
    x, y = _tensors(frame, chosen, target, path, key)
    return _Table(x, y, chosen, tuple(map(str, frame.columns)), sha)


def _read(stamp: _Stamp, fmt: str, key: str) -> tuple[pd.DataFrame, str]:
    """A table and the sha256 of its bytes; one that cannot be read is a ConfigError."""
    import pandas as pd

    path, _, size = stamp
    _check_memory(path, size, fmt, key)
    sha = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        frame = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except (ValueError, OSError, ImportError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{key}={path}: cannot be read as {fmt}: {first}") from None
    if frame.empty:
        raise ConfigError(f"{key}={path}: the table has no rows")
    return frame, sha.hexdigest()


def _check_memory(path: Path, size: int, fmt: str, key: str) -> None:
    """Refuse, in one line, a file whose reading would exhaust the machine's memory."""
    import psutil

    needed, available = size * READ_MEMORY_FACTOR[fmt], psutil.virtual_memory().available
    if needed > available:
        raise ConfigError(
            f"{key}={path}: a {size / 2**30:.1f} GiB {fmt} file needs about "
            f"{needed / 2**30:.1f} GiB of memory to read; {available / 2**30:.1f} GiB is "
            "available: use a smaller file (or a sample of it)"
        )


def _require_columns(frame: pd.DataFrame, wanted: Sequence[str], key: str, path: Path) -> None:
    columns = list(map(str, frame.columns))
    for name in wanted:
        if name not in columns:
            raise ConfigError(
                f"{key}: {name!r} is not a column of {path.name}; columns: {', '.join(columns)}"
            )


def _columns(
    frame: pd.DataFrame, cfg: TableConfig, path: Path, key: str = "data.path"
) -> tuple[str, tuple[str, ...]]:
    """The target and the features, each checked against the table (a held-out file must have
    the training file's: `key` says which file is wrong)."""
    import pandas as pd

    columns = list(map(str, frame.columns))
    if key == "data.val_path" and cfg.features is not None:
        _require_columns(frame, [cfg.target, *cfg.features], key, path)
    if cfg.target not in columns:
        raise ConfigError(f"data.target={cfg.target} is not a column of {path.name}; "
                          f"columns: {', '.join(columns)}")  # fmt: skip
    if cfg.features is None:
        features = tuple(c for c in columns if c != cfg.target
                         and pd.api.types.is_numeric_dtype(frame[c]))  # fmt: skip
        if not features:
            raise ConfigError(f"data.features: {path.name} has no numeric column besides the "
                              f"target {cfg.target!r}; columns: {', '.join(columns)}")  # fmt: skip
        return cfg.target, features
    features = tuple(str(f) for f in cfg.features)
    if not features:
        raise ConfigError("data.features=[] is not allowed: name at least one column, or null "
                          "for every numeric column but the target")  # fmt: skip
    for name in features:
        if name not in columns:
            raise ConfigError(f"data.features: {name!r} is not a column of {path.name}; "
                              f"columns: {', '.join(columns)}")  # fmt: skip
        if name == cfg.target:
            raise ConfigError(f"data.features: {name!r} is the target (data.target)")
    if len(set(features)) != len(features):
        raise ConfigError(f"data.features={list(features)}: a column is named twice")
    return cfg.target, features


def _tensors(
    frame: pd.DataFrame, features: Sequence[str], target: str, path: Path, key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns as float32 tensors; a non-numeric column or an empty cell is refused."""
    import pandas as pd

    for name in (*features, target):
        column = frame[name]
        which = "data.target" if name == target else "data.features"
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise ConfigError(f"{which}: column {name!r} of {path.name} is not numeric "
                              f"({column.dtype}); allowed: numeric columns")  # fmt: skip
        missing = column.isna().to_numpy()
        if missing.any():
            row = int(np.argmax(missing))
            raise ConfigError(f"{key}: column {name!r} of {path.name} has an empty or NaN "
                              f"cell, first at row {row + 1} (of the data rows)")  # fmt: skip
    x = torch.from_numpy(frame[list(features)].to_numpy(dtype=np.float32, copy=True))
    y = torch.from_numpy(frame[[target]].to_numpy(dtype=np.float32, copy=True))
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ConfigError(f"{key}: {path.name} holds a value too large for float32 or infinite")
    return x, y


# ---------------------------------------------------------------- lineage


def _plain(cfg: object) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    assert is_dataclass(cfg) and not isinstance(cfg, type)
    return asdict(cfg)


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
