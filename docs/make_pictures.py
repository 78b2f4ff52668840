"""Regenerate the README's pictures from a real run, a real sweep and the real MLflow UI.

make pictures        (or: .venv/bin/python docs/make_pictures.py)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "docs" / "images"
sys.path.insert(0, str(REPO))

from tests.servers import CHROMIUM, mlflow_server  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def cli(args: list[str], cwd: Path, store: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["MLFLOW_TRACKING_URI"] = store
    subprocess.run([sys.executable, "-m", "linreg_exp", *args], cwd=cwd, env=env, check=True)


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="linreg-pictures-"))
    store = f"sqlite:///{work / 'mlflow.db'}"
    cli([f"hydra.run.dir={work / 'run'}"], work, store)
    for name in ("loss_curve.png", "fit.png", "training.gif"):
        shutil.copy(work / "run" / name, IMAGES / name)
    sweep_dir = work / "sweep"  # its jobs draw pictures: sweep.png shows their loss curves
    cli(["-m", "optimizer.lr=0.001,0.003,0.01,0.03,0.1", "loss=l1,mse", "trainer.epochs=300",
         f"hydra.sweep.dir={sweep_dir}"], work, store)  # fmt: skip
    shutil.copy(sweep_dir / "sweep.png", IMAGES / "sweep.png")
    screenshot_ui(store, work)
    shutil.rmtree(work, ignore_errors=True)
    print(f"pictures written to {IMAGES}")


def screenshot_ui(store: str, work: Path) -> None:
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("linreg")
    parent = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`linreg.kind` = 'sweep'"
    )[0]
    with (
        mlflow_server(store, work / "server.log", default_artifact_root=work / "mlruns") as server,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            str(work / "chromium"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1500, "height": 900},
        )
        page = context.new_page()
        page.goto(
            f"{server.url}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
        )
        link = page.locator(f'a[href$="/runs/{parent.info.run_id}"]')
        link.wait_for(timeout=60_000)
        page.get_by_role("gridcell").filter(has=link).get_by_role("button").click()
        assistant_close = page.get_by_role("button", name="Close")
        if assistant_close.count():
            assistant_close.first.click()  # the "MLflow Assistant" side panel
        page.wait_for_timeout(2_000)
        page.screenshot(path=str(IMAGES / "mlflow_ui_sweep.png"))
        context.close()


if __name__ == "__main__":
    main()
