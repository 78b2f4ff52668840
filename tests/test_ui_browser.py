"""A real sweep, browsed in Chromium through `mlflow server`: the runs, charts and artifacts a
user would look at are really there.

Notes on MLflow 3.17's UI (React, ag-grid, plotly): an experiment opens in the "GenAI" workflow
(traces overview) unless `?workflowType=machine_learning` is given, which shows the runs table;
child runs are collapsed under their parent until the expander in its Run Name cell is clicked;
the run page has role=tab tabs ("Overview", "Model metrics", "Artifacts"); metric charts render
only near the viewport, hence the chart search box.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, run_cli
from tests.servers import CHROMIUM, mlflow_server

pytestmark = pytest.mark.slow

ARTIFACTS_DIR = REPO / "test-artifacts"
EPOCHS = 50
SERIES = ("loss", "weight", "bias")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def _screenshot_on_failure(page: Any, name: str) -> Iterator[None]:
    """On any failure, keep what the browser showed: test-artifacts/NAME.png and .html."""
    try:
        yield
    except BaseException:
        ARTIFACTS_DIR.mkdir(exist_ok=True)
        try:
            page.screenshot(path=str(ARTIFACTS_DIR / f"{name}.png"), full_page=True)
            (ARTIFACTS_DIR / f"{name}.html").write_text(page.content())
        except Exception as error:  # the page itself may be gone
            print(f"could not save a screenshot: {error}")
        raise


def _sweep_runs(client: MlflowClient) -> tuple[str, Run, list[Run]]:
    experiment = client.get_experiment_by_name("linreg")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("linreg.kind") == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 2 and len(runs) == 3, [r.info.run_name for r in runs]
    return experiment.experiment_id, parents[0], children


def test_sweep_in_the_mlflow_ui(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # the first page load is slow on a busy 2-core machine

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(store).search_experiments()  # the schema, before two processes open the file
    # The server boots (~10 s) while the sweep runs (~20 s): it only reads the store.
    with mlflow_server(
        store, tmp_path / "server.log", default_artifact_root=tmp_path / "mlruns", wait=False
    ) as server:
        proc = run_cli(
            ["-m", "optimizer.lr=0.01,0.1", f"trainer.epochs={EPOCHS}"],
            tmp_path,
            tracking_uri=store,
        )
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        experiment_id, parent, children = _sweep_runs(MlflowClient(store))
        assert parent.info.run_name.startswith("sweep ")
        child = min(children, key=lambda r: float(r.data.params["optimizer.lr"]))
        # the artifacts are files beside the store, which the server reads directly
        assert (tmp_path / "mlruns" / child.info.run_id / "artifacts" / "fit.png").is_file()
        server.wait_healthy()

        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                tempfile.mkdtemp(prefix="chromium-", dir=tmp_path),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1600, "height": 1000},
            )
            try:
                page = context.new_page()
                page.set_default_timeout(30_000)
                _check_runs_table(page, server.url, experiment_id, parent, children, expect)
                _check_run_page(page, server.url, experiment_id, child, expect)
            finally:
                context.close()


def _check_runs_table(
    page: Any, base: str, experiment_id: str, parent: Run, children: list[Run], expect: Any
) -> None:
    """The experiment page lists the sweep's parent and, once expanded, both children."""
    with _screenshot_on_failure(page, "ui-experiment-runs"):
        page.goto(f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning")
        parent_link = page.locator(f'a[href$="/runs/{parent.info.run_id}"]')
        expect(parent_link).to_have_text(parent.info.run_name)
        expect(page.get_by_text(f"{len(children) + 1} matching runs")).to_be_visible()
        # collapsed: only the parent's row; its Run Name cell holds the expand button
        page.get_by_role("gridcell").filter(has=parent_link).get_by_role("button").click()
        for child in children:
            expect(page.locator(f'a[href$="/runs/{child.info.run_id}"]')).to_have_text(
                child.info.run_name
            )


def _check_run_page(page: Any, base: str, experiment_id: str, child: Run, expect: Any) -> None:
    """A child's page: its metrics, their charts (one point per epoch), and fit.png."""
    run_id = child.info.run_id
    with _screenshot_on_failure(page, "ui-run-overview"):
        page.goto(f"{base}/#/experiments/{experiment_id}/runs/{run_id}")
        expect(page.get_by_text(child.info.run_name, exact=True).first).to_be_visible()
        metrics_table = page.get_by_role("row")
        for key in SERIES:  # the Overview's metrics table: name cell, last value
            expect(
                metrics_table.filter(has=page.get_by_role("link", name=key, exact=True))
            ).to_have_count(1)

    with _screenshot_on_failure(page, "ui-run-model-metrics"):
        page.get_by_role("tab", name="Model metrics").click()
        expect(page).to_have_url(re.compile(r"/model-metrics"))
        search = page.get_by_placeholder("Search metric charts")
        for key in SERIES:
            search.fill(key)  # only charts near the viewport render; bring this one up
            card = page.get_by_test_id("experiment-view-compare-runs-card").filter(
                has=page.locator(f'h4[title="{key}"]')
            )
            card.scroll_into_view_if_needed()
            expect(card.locator(".js-plotly-plot path.js-line").first).to_have_attribute(
                "d", re.compile(r"^M[\d.]+,[\d.]+L")
            )
            expect(card.locator(".js-plotly-plot path.point")).to_have_count(EPOCHS)

    with _screenshot_on_failure(page, "ui-run-artifacts"):
        page.get_by_role("tab", name="Artifacts").click()
        tree = page.get_by_test_id("artifact-tree-node")
        for name in ("config.yaml", "fit.png", "loss_curve.png", "training.gif"):
            expect(tree.and_(page.locator(f'[artifact-name="{name}"]'))).to_have_count(1)
        tree.and_(page.locator('[artifact-name="fit.png"]')).click()
        image = page.locator('img[alt="fit.png"]')
        expect(image).to_be_visible()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 100 && img.naturalHeight > 100",
            arg=image.element_handle(),
        )
