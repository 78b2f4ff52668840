"""The docs cannot go stale: every command they show is checked against the real program.

Every `python -m linreg_exp ...` and `linreg-exp ...` command in a fenced code block of README.md
or docs/*.md must compose, as the program would compose it:

- a single run: `--cfg all`, through the app's own entry point (Hydra's composition, the
  schema's checks, the one-line error policy), which also says whether the config makes it a
  sweep (`hparams_search=...` does);
- a sweep (`-m`, or an `hparams_search=` that makes one): the sweep's own config, Hydra's part
  included (the launcher and the sweeper must exist and import), then its jobs, composed the way
  a launcher composes them, enough of them that every swept value is composed once;
- `--help`, `--cfg ...`: run as written; `linreg-exp sync ...`: its arguments parsed, and a sync
  of a path that holds no spool (so it reaches no store).

They are composed in one subprocess, in-process one after the other (one Python start-up for
them all, not one per command). A console example (`$ python -m linreg_exp ...` followed by an
`error: ...` line) must fail with that line (`…` stands for any text). A command that needs an
extra that is not installed here is skipped, saying which.

The README's quick commands (a single run, or a basic-launcher sweep of a few jobs, on the
default store) also run for real, in a temporary directory with a SQLite store under tmp_path.
A command a newcomer copies first must work: it exits 0 and, if a single run, does not diverge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import REPO, assert_nothing_running, run_cli
from tests.support.store import empty_store, only_run
from tests.support.tutorial import least_squares

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 200
# The longest the composing subprocess may take: a hang guard, >= 10x what it takes (~10 s).
COMPOSE_TIMEOUT = 300

_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")
_PROGRAM = re.compile(
    r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"  # environment assignments
    r"(?:\S*/)?(?:python3?(?:\.\d+)?\s+-m\s+linreg_exp|linreg-exp)(?:\s|$)"
)
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
_CAT_TO_FILE = re.compile(r"^cat\s*>\s*(\S+)\s*<<")
_SHELL_END = {"&&", "||", ";", "|"}


@dataclasses.dataclass(frozen=True)
class DocCommand:
    """A command as a doc shows it: where, the words after the program, what it should say."""

    file: str  # relative to the repository
    line: int  # where the command starts (1-based)
    text: str  # as written, continuation lines joined
    argv: tuple[str, ...]  # the words after `python -m linreg_exp` / `linreg-exp`
    env: tuple[str, ...] = ()  # NAME=value words before the program
    files: tuple[tuple[str, str], ...] = ()  # files its block writes first (heredocs)
    expect_error: str | None = None  # the `error:` line a console example shows after it

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def fenced_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """Each fenced code block: the number of its first line (1-based) and its lines, with the
    fence's indentation removed (a block inside a list item is indented)."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent, fence = len(opening.group(1)), opening.group(2)
        first, body = index + 1, []
        while index < len(lines) and not lines[index].strip().startswith(fence):
            line = lines[index]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            index += 1
        index += 1  # the closing fence
        yield first, body


def commands_in(text: str, file: str) -> list[DocCommand]:
    """The linreg_exp commands of a markdown text's fenced blocks.

    A line continued with a trailing backslash is joined to the next; `# comments` are dropped;
    heredocs (`cat > my_conf/x.yaml <<'YAML'`) are files the block's commands get; a line that
    starts with `$ ` is a console command, and the lines up to the next one are its output."""
    found: list[DocCommand] = []
    for first, body in fenced_blocks(text):
        files: list[tuple[str, str]] = []
        console = any(line.startswith("$ ") for line in body)
        index = 0
        while index < len(body):
            number, line = first + index, body[index]
            index += 1
            heredoc = _HEREDOC.search(line)
            if heredoc is not None:  # its body is a file's text, never a command
                content = []
                while index < len(body) and body[index].strip() != heredoc.group(2):
                    content.append(body[index])
                    index += 1
                index += 1
                target = _CAT_TO_FILE.match(line.strip())
                if target is not None:
                    files.append((target.group(1), "\n".join(content) + "\n"))
                continue
            prompt = line.startswith("$ ")
            if console and not prompt:
                continue  # output
            while line.rstrip().endswith("\\") and index < len(body):
                line = line.rstrip()[:-1] + " " + body[index].strip()
                index += 1
            text_ = line[2:].strip() if prompt else line.strip()
            if not _PROGRAM.match(text_):
                continue
            expect = None
            if prompt:
                for output in body[index:]:
                    if output.startswith("$ "):
                        break
                    if output.startswith("error: "):
                        expect = output.strip()
                        break
            found.append(parse_command(text_, file, number, tuple(files), expect))
    return found


def parse_command(
    text: str, file: str, line: int, files: tuple[tuple[str, str], ...], expect: str | None
) -> DocCommand:
    """Split a command line as a shell would (quotes, comments), up to `&&`, `;` or a pipe."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError as error:  # unbalanced quotes: reported by the test, naming the line
        return DocCommand(file, line, text, ("<unparsable>", str(error)), (), files, expect)
    for position, word in enumerate(words):
        if word in _SHELL_END:
            words = words[:position]
            break
    env = []
    while words and _ENV_ASSIGNMENT.fullmatch(words[0]):
        env.append(words.pop(0))
    program_words = 1 if words[0].endswith("linreg-exp") else 3  # python -m linreg_exp
    return DocCommand(file, line, text, tuple(words[program_words:]), tuple(env), files, expect)


def doc_commands() -> list[DocCommand]:
    commands = []
    for path in DOC_FILES:
        commands += commands_in(path.read_text(), str(path.relative_to(REPO)))
    return commands


COMMANDS = doc_commands()


# ------------------------------------------------------------ composing, in one subprocess


def compose_main() -> None:
    """In the subprocess: compose each command (JSON on stdin), print the results as JSON."""
    commands = json.load(sys.stdin)
    results = []
    for command in commands:
        with tempfile.TemporaryDirectory() as cwd:
            # from a checkout, as the docs say: their relative data paths name examples/
            (Path(cwd) / "examples").symlink_to(REPO / "examples")
            for name, content in command["files"]:
                path = Path(cwd) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
            previous = os.getcwd()
            os.chdir(cwd)
            try:
                results.append(compose_one(command["argv"]))
            finally:
                os.chdir(previous)
    sys.__stdout__.write("\n" + json.dumps(results) + "\n")  # the last line


def compose_one(argv: list[str]) -> dict[str, Any]:
    """Whether `argv` composes, the one line it fails with, and what the real run would be."""
    from linreg_exp import app

    if argv[:1] == ["sync"]:
        return _captured(lambda: app.run_sync(argv[1:]))[0]
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return {"code": 2, "error": f"error: not a valid command line: {shlex.join(argv)}"}
    if args.help or args.hydra_help or args.cfg or args.info:
        return _captured(lambda: _run_hydra(argv))[0]
    if not args.multirun:  # `--cfg all`: the job's config, checked, and Hydra's (its mode)
        single, printed = _captured(lambda: _run_hydra(["--cfg", "all", *argv]))
        if single["code"] != 0:
            return single
        from omegaconf import OmegaConf

        shown = OmegaConf.create(printed)
        if OmegaConf.select(shown, "hydra.mode") != "MULTIRUN":  # hparams_search=... sweeps
            return {**single, "epochs": OmegaConf.select(shown, "trainer.epochs")}
    try:
        return _compose_sweep(_hydra(args.config_dir), args.overrides)
    except BaseException as error:  # the app's policy makes the line a user would see
        return _captured(functools.partial(app.report, error))[0]


def _hydra(config_dir: str | None) -> Any:
    """Hydra as the app's entry point sets it up (hydra.main with the app's config dir, and
    `--config-dir`), kept for composing a sweep, which `--cfg` cannot show."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import SearchPathException

    from linreg_exp import schema

    search_path = create_automatic_config_search_path(None, None, str(schema.CONFIG_DIR))
    if config_dir is not None:
        absolute = os.path.abspath(config_dir)
        if not os.path.isdir(absolute):
            raise SearchPathException(f"Additional config directory '{absolute}' not found")
        search_path.prepend("command-line", f"file://{absolute}", SearchPathQuery("schema"))
    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(task_name="linreg_exp", config_search_path=search_path)


def _run_hydra(argv: list[str]) -> int:
    """The app's own entry point, as `python -m linreg_exp ARGV` runs it."""
    from hydra.core.global_hydra import GlobalHydra

    from linreg_exp import app

    GlobalHydra.instance().clear()
    os.environ.pop("HYDRA_FULL_ERROR", None)  # the app sets it for Hydra; it means "traceback"
    sys.argv = ["linreg_exp", *argv]
    return app.run_hydra()


def _captured(call: Any) -> tuple[dict[str, Any], str]:
    """What `call` returns (an exit status) and the `error:` line it prints; and its stdout."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = call()
        except SystemExit as exit_:  # argparse
            code = exit_.code if isinstance(exit_.code, int) else 1
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
    error = errors[-1] if errors else (err.getvalue().strip()[-500:] or None)
    return {"code": code, "error": error if code else None, "jobs": 1}, out.getvalue()


def _compose_sweep(hydra: Any, overrides: list[str]) -> dict[str, Any]:
    """A sweep as a launch composes it: its config in MULTIRUN mode (Hydra's launcher and
    sweeper must import), then its jobs, composed as a launcher composes them (Hydra's
    overrides with each job's own), each checked as the job checks itself. A job per option of
    a swept config group is composed; the other swept values are applied to a composed job
    and checked, which is what composing would do to them, for a fraction of the time."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode
    from hydra.utils import get_class
    from omegaconf import OmegaConf, open_dict

    from linreg_exp import schema

    sweep = hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN)
    launcher, sweeper = get_class(sweep.hydra.launcher._target_), sweep.hydra.sweeper._target_
    schema.validate(sweep)  # what every job shares, checked before any runs (sweeps/launch.py)
    Path(str(sweep.hydra.sweep.dir))  # resolved, as the launch resolves it
    basic = issubclass(get_class(sweeper), BasicSweeper)
    params = sweep.hydra.sweeper.get("params") or {}
    swept = _swept([(str(k), str(v)) for k, v in params.items()], overrides, basic)
    groups = {k: v for k, v in swept.items() if k.lstrip("+~").split("@")[0] in
              sweep.hydra.runtime.choices}  # fmt: skip
    total = 1
    for each in swept.values():
        total *= len(each)
    if not basic:
        total = int(sweep.hydra.sweeper.get("n_trials", total))
    epochs = 0
    for number in range(max((len(v) for v in groups.values()), default=1)):
        job = [each[number % len(each)] for each in swept.values()]
        cfg = hydra.config_loader.load_sweep_config(sweep, job)
        with open_dict(cfg):  # as Hydra's launchers do
            cfg.hydra.job.id, cfg.hydra.job.num = f"job_{number}", number
        for key in [*(k for k in cfg if k != "hydra"), "hydra.launcher", "hydra.sweeper"]:
            node = OmegaConf.select(cfg, str(key))  # a leaf is resolved by selecting it
            if OmegaConf.is_config(node):
                OmegaConf.to_container(node, resolve=True)
        schema.validate(cfg)
        epochs = max(epochs, int(cfg.trainer.epochs))
        for key, values in swept.items():
            if key in groups or len(values) == 1:
                continue
            for value in values:
                parsed = OverridesParser.create().parse_overrides([value])
                ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
                schema.validate(cfg)
                epochs = max(epochs, int(cfg.trainer.epochs))
    return {"code": 0, "error": None, "jobs": total, "epochs": epochs,
            "launcher": launcher.__name__, "sweeper": get_class(sweeper).__name__}  # fmt: skip


def _swept(
    params: list[tuple[str, str]], overrides: list[str], basic: bool
) -> dict[str, list[str]]:
    """Each override's key and its values, as overrides (`optimizer.lr=0.1`). Config params
    come first, as the sweepers read them: the command line's value of a key replaces them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep
    from hydra.errors import HydraException

    typed = [f"{key}={value}" for key, value in params] + list(overrides)
    values: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(typed):
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        elif basic:
            raise HydraException(f"{override.input_line}: the basic sweeper sweeps only lists "
                                 "and ranges")  # fmt: skip
        else:
            interval = override.value()
            assert isinstance(interval, IntervalSweep)
            values[key] = [f"{key}={interval.start}", f"{key}={interval.end}"]
    return values


# What the module's fixtures made, kept for the worker's whole life: pytest-xdist tears a module's
# fixtures down whenever a worker's queue of tests runs dry, even within one xdist_group, and the
# last fresh-clone run composed the docs three times and ran the README twice on one worker.
_MADE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def composed() -> dict[DocCommand, dict[str, Any]]:
    """Every command of the docs, composed in one subprocess (the project's own venv), once."""
    if "composed" not in _MADE:
        _MADE["composed"] = compose_all()
    return cast(dict[DocCommand, dict[str, Any]], _MADE["composed"])


def compose_all() -> dict[DocCommand, dict[str, Any]]:
    """Each distinct command once (the docs show some of them in several places)."""
    distinct = list(dict.fromkeys((c.argv, c.files) for c in COMMANDS))
    payload = [{"argv": list(argv), "files": list(files)} for argv, files in distinct]
    done = subprocess.run(
        [sys.executable, "-c", "from tests.test_docs import compose_main; compose_main()"],
        input=json.dumps(payload),
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))},
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = dict(zip(distinct, json.loads(done.stdout.strip().splitlines()[-1]), strict=True))
    return {c: results[c.argv, c.files] for c in COMMANDS}


def _matches(expected: str, actual: str | None) -> bool:
    """Whether an `error:` line is the one a doc shows; `…` (or `...`) stands for any text."""
    pattern = ".*?".join(re.escape(part) for part in re.split(r"…|\.\.\.", expected))
    return actual is not None and re.fullmatch(pattern, actual.strip()) is not None


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_doc_command_composes(
    command: DocCommand, composed: dict[DocCommand, dict[str, Any]]
) -> None:
    result = composed[command]
    shown = f"{command.where}: {command.text}"
    if command.expect_error is not None:
        assert result["code"] != 0, f"{shown}\n  composes, but the doc shows it failing"
        assert _matches(command.expect_error, result["error"]), (
            f"{shown}\n  the doc says:  {command.expect_error}\n  it says:      {result['error']}"
        )
        return
    if result["code"] != 0 and "comes with an extra: pip install" in str(result["error"]):
        pytest.skip(f"{shown}: {result['error']}")
    assert result["code"] == 0, f"{shown}\n  does not compose: {result['error']}"


# ------------------------------------------------------------ the README's quick ones, for real

QUICK_JOBS = 1  # single runs: sweeps are composed here and run in tests/test_sweeps.py, ...
QUICK_EPOCHS = 1000  # ... of at most this many epochs each


def is_quick_candidate(command: DocCommand) -> bool:
    """A README command that may run here in seconds: no server, cluster, search or extra
    config dir (those are composed only); whether it is small enough, composing tells."""
    argv = command.argv
    flags = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--config-dir", "-cd"}
    return (
        command.file == "README.md"
        and command.expect_error is None
        and not command.env
        and argv[:1] != ("sync",)
        and not flags & set(argv)
        and not any(
            a.startswith(("hydra/", "hparams_search=", "mlflow.tracking_uri=")) for a in argv
        )
    )


QUICK = [c for c in COMMANDS if is_quick_candidate(c)]


@pytest.fixture(scope="module")
def ran(
    composed: dict[DocCommand, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> dict[DocCommand, tuple[subprocess.CompletedProcess[str], str] | str]:
    """The README's quick commands, run for real, once (see _MADE)."""
    if "ran" not in _MADE:
        _MADE["ran"] = run_quick(composed, tmp_path_factory)
    return cast(dict[DocCommand, tuple[subprocess.CompletedProcess[str], str] | str], _MADE["ran"])


def run_quick(
    composed: dict[DocCommand, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> dict[DocCommand, tuple[subprocess.CompletedProcess[str], str] | str]:
    """The README's quick commands, run for real, two at a time (the machine has 2 cores; each
    spends most of its time starting Python, torch and MLflow), each in a directory of its own
    with a SQLite store there; a command that is not quick says why instead."""

    # made here, not in the threads: pytest's tmp_path_factory is not thread-safe
    places = {command: tmp_path_factory.mktemp("readme") for command in QUICK}

    def run(command: DocCommand) -> tuple[subprocess.CompletedProcess[str], str] | str:
        result = composed[command]
        if result["code"] != 0:
            return f"does not compose: {result['error']}"
        if result["jobs"] > QUICK_JOBS or (result["epochs"] or 0) > QUICK_EPOCHS:
            return f"not quick: {result['jobs']} jobs of {result['epochs']} epochs"
        cwd = places[command]
        # run from a checkout, as the README says: its relative data paths name examples/
        shutil.copytree(REPO / "examples", cwd / "examples")
        for name, content in command.files:
            (cwd / name).parent.mkdir(parents=True, exist_ok=True)
            (cwd / name).write_text(content)
        store = empty_store(cwd / "mlflow.db")
        return run_cli(list(command.argv), cwd, tracking_uri=store, timeout=300), store

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(QUICK, pool.map(run, QUICK), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("command", QUICK, ids=[c.where for c in QUICK])
def test_readme_command_runs(
    command: DocCommand,
    ran: dict[DocCommand, tuple[subprocess.CompletedProcess[str], str] | str],
) -> None:
    outcome = ran[command]
    if isinstance(outcome, str):
        assert outcome.startswith("not quick"), f"{command.where}: {outcome}"
        pytest.skip(f"{command.where}: {outcome}")
    done, store = outcome
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command.where}: {command.text}\n{output[-3000:]}"
    assert_nothing_running(store)
    if "-m" not in command.argv and "--multirun" not in command.argv:
        assert "DIVERGED" not in output, f"{command.where}: {command.text} diverges\n{output}"
        assert "epochs done" in output, output
    if "least-squares optimum" in command.text:  # what the README says of its MSE example
        metrics = only_run(store).data.metrics
        slope, intercept = least_squares()
        assert metrics["final_weight"] == pytest.approx(slope, abs=1e-3), command.text
        assert metrics["final_bias"] == pytest.approx(intercept, abs=1e-3), command.text


def test_the_readme_runs_its_least_squares_example_for_real() -> None:
    """The README says where its MSE example lands, and test_readme_command_runs checks it
    there: the claim stays a quick command that runs for real."""
    claims = [c for c in QUICK if "least-squares optimum" in c.text]
    assert claims and all("loss=mse" in c.argv for c in claims), [c.text for c in QUICK]


# ------------------------------------------------------------ the docs themselves, and the parser


def test_readme_is_short_and_its_commands_are_found() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    readme = [c for c in COMMANDS if c.file == "README.md"]
    assert any(c.argv == () for c in readme), "the README shows the default run"
    assert any("-m" in c.argv for c in readme), "the README shows a sweep"
    assert QUICK, "the README has commands that run for real"


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_doc_links_lead_somewhere() -> None:
    """A relative link or picture in README.md or docs/*.md names a file that exists, and an
    anchor its file has."""
    broken = []
    for path in DOC_FILES:
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            for target in _LINK.findall(line):
                if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                    continue
                name, _, anchor = target.partition("#")
                linked = (path.parent / name).resolve() if name else path
                if not linked.exists():
                    broken.append(f"{path.relative_to(REPO)}:{number}: {target}: no such file")
                elif (
                    anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text())
                ):
                    broken.append(f"{path.relative_to(REPO)}:{number}: {target}: no such heading")
    assert not broken, "\n".join(broken)


def test_commands_are_extracted_as_a_shell_reads_them() -> None:
    text = "\n".join([
        "Prose: python -m linreg_exp outside a block is not a command.",
        "```bash",
        "python -m linreg_exp   # the default",
        "MLFLOW_TRACKING_URI=http://h:5000 python -m linreg_exp -m \\",
        "    optimizer.lr=0.1,0.2 \"seed=range(0,4)\"   # a sweep",
        "mkdir -p my_conf/experiment",
        "cat > my_conf/experiment/x.yaml <<'YAML'",
        "python -m linreg_exp is the heredoc's text here",
        "YAML",
        "python -m linreg_exp --config-dir my_conf experiment=x && echo done",
        "linreg-exp sync outputs --to http://h:5000",
        "```",
        "- a list item:",
        "  ```",
        "  $ python -m linreg_exp optimizer.lr=0",
        "  error: optimizer.lr=0.0 is not allowed: must be > 0",
        "  $ python -m linreg_exp loss=mse",
        "  ```",
        "```",
        "  rerun  python -m linreg_exp      (output, not a command)",
        "```",
    ])  # fmt: skip
    found = commands_in(text, "x.md")
    assert [(c.line, c.argv) for c in found] == [
        (3, ()),
        (4, ("-m", "optimizer.lr=0.1,0.2", "seed=range(0,4)")),
        (10, ("--config-dir", "my_conf", "experiment=x")),
        (11, ("sync", "outputs", "--to", "http://h:5000")),
        (15, ("optimizer.lr=0",)),
        (17, ("loss=mse",)),
    ]
    assert found[1].env == ("MLFLOW_TRACKING_URI=http://h:5000",)
    assert found[2].files == (
        ("my_conf/experiment/x.yaml", "python -m linreg_exp is the heredoc's text here\n"),
    )
    assert found[4].expect_error == "error: optimizer.lr=0.0 is not allowed: must be > 0"
    assert found[5].expect_error is None


def test_an_error_line_matches_with_ellipses() -> None:
    assert _matches("error: a … b", "error: a x y b")
    assert not _matches("error: a … b", "error: a x y c")
    assert _matches("error: x=(…)", "error: x=(1, 2)")
