"""Real runs, browsed in Chromium through `mlflow server`: the runs, names, datasets, charts and
artifacts a user looks at are really there, and a running run's chart grows as it trains.

Notes on MLflow 3.17's UI (React, ag-grid, plotly): an experiment opens on the GenAI pages unless
the GenAI / Model training switch says otherwise (`?workflowType=machine_learning` sets it; the
experiment's `mlflow.experimentKind` tag is not consulted in 3.17.2);
child runs are collapsed under their parent until the expander in its Run Name cell is clicked;
the run page has role=tab tabs ("Overview", "Model metrics", "Artifacts"); metric charts render
only near the viewport, hence the chart search box. The "Model metrics" charts refetch every
30 s while "Auto-refresh" is on (the default); a chart is drawn from at most 320 sampled points
(first and last kept), and plotly's own data (`gd.data`) says which steps it shows.
"""

from __future__ import annotations

import re
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, run_cli
from tests.support.processes import lower_priority
from tests.support.servers import CHROMIUM, MlflowServer, mlflow_server
from tests.support.store import empty_store, points_stored
from tests.test_reliability import start_endless_run, wait_for_points

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


@contextmanager
def _browser(tmp_path: Path) -> Iterator[Any]:
    """A page in a fresh headless Chromium profile."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # the first page load is slow on a busy 2-core machine
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
            yield page
        finally:
            context.close()


@contextmanager
def _server_on(tmp_path: Path) -> Iterator[tuple[str, MlflowServer]]:
    """A SQLite store (its schema made first) and a tracking server reading it, still booting."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    store = empty_store(tmp_path / "mlflow.db")  # the schema, before two processes open it
    with mlflow_server(
        store, tmp_path / "server.log", default_artifact_root=tmp_path / "mlruns", wait=False
    ) as server:
        yield store, server


def test_a_sweep_and_a_live_run_in_the_mlflow_ui(tmp_path: Path) -> None:
    """One server and one browser: a finished sweep as the UI shows it (the link it printed,
    the runs table, a child's page), then the run page a user keeps open while a run trains:
    its loss chart gains points at the UI's next refresh."""
    from playwright.sync_api import expect

    # The server boots (~10 s) while the sweep runs (~20 s): it only reads the store.
    with _server_on(tmp_path) as (store, server):
        proc = run_cli(
            ["-m", "optimizer.lr=0.01,0.1", f"trainer.epochs={EPOCHS}"],
            tmp_path,
            tracking_uri=store,
        )
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        experiment_id, parent, children = _sweep_runs(MlflowClient(store))
        assert parent.info.run_name == "sweep lr=0.01,0.1"
        assert {c.info.run_name for c in children} == {"lr=0.01", "lr=0.1"}
        child = min(children, key=lambda r: float(r.data.params["optimizer.lr"]))
        # the artifacts are files beside the store, which the server reads directly
        assert (tmp_path / "mlruns" / child.info.run_id / "artifacts" / "fit.png").is_file()
        server.wait_healthy()
        printed = re.search(r"MLflow parent run \w+: (\S+)", proc.stdout)
        assert printed is not None, proc.stdout
        with _browser(tmp_path) as page:  # a fresh profile: no switch remembered
            _check_printed_link(page, printed[1].replace("http://127.0.0.1:5000", server.url),
                                expect)  # fmt: skip
            _check_runs_table(page, server.url, experiment_id, parent, children, expect)
            _check_run_page(page, server.url, experiment_id, child, expect)
            _check_live_chart(page, tmp_path, store, server.url, expect)


def _check_live_chart(page: Any, tmp_path: Path, store: str, base: str, expect: Any) -> None:
    """A running run's page: its loss chart gains points at the UI's next refresh (its 30 s
    timer, fast-forwarded)."""
    db, client = tmp_path / "mlflow.db", MlflowClient(store)
    experiment = client.get_experiment_by_name("linreg")
    assert experiment is not None
    before = {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    process = start_endless_run(tmp_path, store)  # the sweep's runs have ended
    try:
        wait_for_points(db, process, more_than=100)
        lower_priority(process.pid)  # the browser's work comes first (tests/support/processes.py)
        (run,) = [r for r in client.search_runs([experiment.experiment_id])
                  if r.info.run_id not in before]  # fmt: skip
        page = page.context.new_page()  # the app loaded afresh, under the installed clock
        with _screenshot_on_failure(page, "ui-live-chart"):
            page.clock.install()  # the UI's 30 s refresh timer, fast-forwarded below
            page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}")
            card = _metric_card(page, "loss", expect)
            first = _last_step_drawn(card)
            wait_for_points(db, process, more_than=points_stored(db))  # a batch more
            deadline, refreshed = time.monotonic() + 60, 0.0
            while (last := _last_step_drawn(card)) <= first:
                assert time.monotonic() < deadline, f"the chart stayed at step {last}"
                if time.monotonic() - refreshed > 5:  # the next refresh, if one came early
                    page.clock.fast_forward(31_000)
                    refreshed = time.monotonic()
                time.sleep(0.25)
            assert run.info.status == "RUNNING"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def _metric_card(page: Any, key: str, expect: Any) -> Any:
    """The "Model metrics" chart of `key`, rendered (charts render only near the viewport)."""
    page.get_by_role("tab", name="Model metrics").click()
    expect(page).to_have_url(re.compile(r"/model-metrics"))
    page.get_by_placeholder("Search metric charts").fill(key)
    card = page.get_by_test_id("experiment-view-compare-runs-card").filter(
        has=page.locator(f'h4[title="{key}"]')
    )
    card.scroll_into_view_if_needed()
    expect(card.locator(".js-plotly-plot path.js-line").first).to_have_attribute(
        "d", re.compile(r"^M[\d.]+,[\d.]+L")
    )
    return card


def _last_step_drawn(card: Any) -> int:
    """The last step of the chart's line, from plotly's own data."""
    plot = card.locator(".js-plotly-plot").first
    return int(plot.evaluate("gd => gd.data[0].x.at(-1)"))


def _check_printed_link(page: Any, url: str, expect: Any) -> None:
    """The link a run prints opens MLflow's Model training pages, not its GenAI ones."""
    with _screenshot_on_failure(page, "ui-printed-link"):
        page.goto(url)
        expect(page.get_by_role("link", name="Models", exact=True)).to_be_visible()
        expect(page.get_by_role("link", name="Evaluation runs")).to_have_count(0)


def _check_runs_table(
    page: Any, base: str, experiment_id: str, parent: Run, children: list[Run], expect: Any
) -> None:
    """The experiment page lists the sweep's parent and, once expanded, both children."""
    with _screenshot_on_failure(page, "ui-experiment-runs"):
        # MLflow 3.17.2's UI opens experiments by its GenAI / Model training switch, not by
        # their mlflow.experimentKind tag (which we set, for UIs that honour it)
        page.goto(f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning")
        parent_link = page.locator(f'a[href$="/runs/{parent.info.run_id}"]')
        expect(parent_link).to_have_text(parent.info.run_name)
        expect(page.get_by_text(f"{len(children) + 1} matching runs")).to_be_visible()
        # collapsed: only the parent's row; its Run Name cell holds the expand button
        page.get_by_role("gridcell").filter(has=parent_link).get_by_role("button").click()
        for child in children:  # named after what the sweep varies
            expect(page.locator(f'a[href$="/runs/{child.info.run_id}"]')).to_have_text(
                child.info.run_name
            )
        dataset = children[0].inputs.dataset_inputs[0].dataset
        expect(page.get_by_role("gridcell").filter(has_text=dataset.name)).to_have_count(2)
        # the Models column: each job's logged model
        models = page.get_by_role("gridcell").filter(has_text=re.compile(r"^model$"))
        expect(models).to_have_count(len(children))


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
        for key in SERIES:
            card = _metric_card(page, key, expect)
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
