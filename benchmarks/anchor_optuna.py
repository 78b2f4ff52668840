"""The anchor of §11: an Optuna search over the tutorial's learning rate, written by hand.

What a user writes without linreg_exp: plain torch + optuna + mlflow, no framework. The bench
(benchmarks/questions/optuna_search.py) times it against `python -m linreg_exp
hparams_search=lr_optuna sweep.pruner=median`, so it keeps exactly that search: the tutorial's
data (seed 0, 1,000 points, and linreg_exp's 1,000 held-out points, so that both score the same
val_mse), nn.Linear(1, 1) seeded with 0, L1 loss, SGD, full batch, 500 epochs; optimizer.lr
log-uniform in [1e-4, 0.3], TPE seeded with 0, MedianPruner (Optuna's defaults) fed val_mse
every 25 epochs. Each trial is an MLflow child run of one parent, with every epoch's
loss/weight/bias; threads as linreg_exp sets them (one below 200,000 points).

Its logging is the careful user's, not a straw man: each report's 25 epochs go out in one
`MlflowClient.log_batch` (one call per epoch, `--log-every-epoch`, is what most tutorials show,
and is slower). The store is MLFLOW_TRACKING_URI (an SQLite file in the bench).

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/anchor_optuna.py [--trials 32]
        [--epochs 500] [--pruner median|none] [--report-every 25] [--log-every-epoch]
"""

import argparse
import hashlib
import time

import mlflow
import optuna
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from torch import nn

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--trials", type=int, default=32)
parser.add_argument("--epochs", type=int, default=500)
parser.add_argument("--pruner", choices=("median", "none"), default="median")
parser.add_argument("--report-every", type=int, default=25)
parser.add_argument("--log-every-epoch", action="store_true", help="mlflow.log_metrics an epoch")
parser.add_argument("--experiment", default="optuna_anchor")
args = parser.parse_args()

torch.set_num_threads(1)  # 1,000 points: as linreg_exp (and the bare tutorial) run them


def make_data(seed: int, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tutorial's points: x ~ U(-10, 10), y = 2 (x + noise) + 3, noise ~ N(0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(num, 1, generator=generator) * 20 - 10
    y = 2.0 * (x + torch.randn(num, 1, generator=generator)) + 3.0
    return x, y


# The held-out points from linreg_exp's stream for seed 0 (linreg_exp/data.py: held_out_seed), so
# that the anchor's val_mse and linreg_exp's are one yardstick.
HELD_OUT_SEED = int.from_bytes(hashlib.sha256(b"linreg_exp held-out 0").digest()[:8], "little") >> 1
x, y = make_data(0, 1000)
x_val, y_val = make_data(HELD_OUT_SEED, 1000)


def val_mse(model: nn.Linear) -> float:
    """Mean squared error on the held-out points, in float64 (as linreg_exp scores it)."""
    with torch.no_grad():
        w, b = model.weight.double().item(), model.bias.double().item()
        residual = y_val.double().flatten() - (x_val.double().flatten() * w + b)
        return float(residual.square().mean())


client = MlflowClient()


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("optimizer.lr", 1e-4, 0.3, log=True)
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    loss_fn = nn.L1Loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    pruned_at = None
    with mlflow.start_run(run_name=f"trial {trial.number} lr={lr:.4g}", nested=True) as run:
        mlflow.log_params({"optimizer.lr": lr, "trial": trial.number})
        pending: list[Metric] = []
        for epoch in range(args.epochs):
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            values = {"loss": loss.item(), "weight": model.weight.item(), "bias": model.bias.item()}
            if args.log_every_epoch:
                mlflow.log_metrics(values, step=epoch)
            else:
                now = int(time.time() * 1000)
                pending += [Metric(key, value, now, epoch) for key, value in values.items()]
            if (epoch + 1) % args.report_every == 0:
                score = val_mse(model)
                pending.append(Metric("val_mse", score, int(time.time() * 1000), epoch))
                client.log_batch(run.info.run_id, metrics=pending)
                pending = []
                trial.report(score, epoch + 1)
                if trial.should_prune():
                    pruned_at = epoch + 1
                    break
        if pending:
            client.log_batch(run.info.run_id, metrics=pending)
        score = val_mse(model)
        mlflow.log_metric("val_mse", score, step=args.epochs if pruned_at is None else pruned_at)
        mlflow.set_tag("outcome", "completed" if pruned_at is None else "pruned")
        if pruned_at is not None:
            mlflow.set_tag("pruned_at_epoch", pruned_at)
    if pruned_at is not None:
        raise optuna.TrialPruned()  # after the run has ended FINISHED, not FAILED
    return score


optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(
    direction="minimize",
    sampler=optuna.samplers.TPESampler(seed=0),
    pruner=optuna.pruners.MedianPruner() if args.pruner == "median" else optuna.pruners.NopPruner(),
)
mlflow.set_experiment(args.experiment)
with mlflow.start_run(run_name=f"optuna lr search, {args.trials} trials"):
    study.optimize(objective, n_trials=args.trials)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    mlflow.log_params({"n_trials": args.trials, "pruner": args.pruner})
    mlflow.log_metrics({"best_val_mse": study.best_value, "trials_pruned": pruned})
    mlflow.set_tag("best.optimizer.lr", str(study.best_params["optimizer.lr"]))
print(
    f"best val_mse {study.best_value:.6g} at optimizer.lr={study.best_params['optimizer.lr']:.4g}; "
    f"{pruned} of {args.trials} trials pruned"
)
