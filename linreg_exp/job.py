"""One job, end to end: config → data → training → named metrics → tracking, then its report.

`run(cfg, job, tracker)` is a plain function of the composed config and a small description of
this one job (jobspec.Job); the launch (sweeps/) builds the description and picks the tracker, and
nothing here reads Hydra's state or knows about sweeps. Nothing here imports MLflow either: the
tracker owns the run, in a helper process or in this one.

Everything that can reject the job (its values, its data, the device, the optimizer's arguments,
the store) happens before its MLflow run exists; once it exists, the run lifecycle (lifecycle.py,
the same for a batched sweep's N configs) ends it with an outcome, however training ends. The job
builds its optimizer before it waits for the store, which opens meanwhile.
"""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from linreg_exp import tracking
from linreg_exp.data import Scaling
from linreg_exp.jobspec import Job, JobResult
from linreg_exp.lifecycle import Lifecycle, build_loss, load_data
from linreg_exp.schema import validate
from linreg_exp.tracking.messages import Open
from linreg_exp.tracking.recorder import Tracker
from linreg_exp.train import fit, load_optimizer, resolve_device, set_cpu_threads, step_kind


def run(cfg: DictConfig, job: Job, tracker: Tracker | None = None) -> JobResult:
    """Train and track one job. Without a tracker, it opens one of its own in this process."""
    if tracker is None:
        own = tracking.in_process(
            Open(job.tracking_uri, cfg.mlflow.experiment_name, parent_run_id=job.parent_run_id,
                 spool_dir=str(job.output_dir), outage_timeout=cfg.mlflow.outage_timeout)
        )  # fmt: skip
        try:
            return run(cfg, job, own)
        finally:
            own.close()
    validate(cfg)
    device = resolve_device(cfg.device.name)
    splits = load_data(cfg, job)  # a table that cannot be used is refused before the run
    scaling = Scaling.of(splits.train) if cfg.model.standardize else None
    set_cpu_threads(splits.train.rows)
    loss_fn = build_loss(cfg.loss).to(device)
    make_optimizer = instantiate(cfg.optimizer)
    load_optimizer(make_optimizer)
    trainer = cfg.trainer
    kind = step_kind(loss_fn, splits.train.rows, trainer.batch_size, len(splits.features))
    life = Lifecycle([(cfg, job, splits)], [tracker], str(device), kind)
    if life.start():  # else kept: FINISHED in an earlier launch of its sweep
        with life.training():
            data = (scaling.apply(splits.train) if scaling else splits.train).to(device)
            epochs = fit(data, loss_fn, make_optimizer, trainer.epochs, trainer.batch_size,
                         cfg.seed, scaling)  # fmt: skip
            for step, metrics in enumerate(epochs):
                if not life.epoch(step, [tuple(metrics.values())]):
                    break
    (result,) = life.results()
    if isinstance(result, Exception):
        raise result
    return result
