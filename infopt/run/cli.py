"""The command line of ``run_notebooks.py``: the parser, and ``--param`` values checked against the type each
notebook declares (one sentence when wrong)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from infopt.devices import DEVICE_CHOICES, TARGET_SYNTAX, parse_target
from infopt.errors import InfoptError, InvalidInputError
from infopt.models import list_models, spec_help
from infopt import presets
from infopt.presets import MODEL_NOTEBOOKS, REPORT_NOTEBOOK
from infopt.optimize.race import SEARCHES
from infopt.serve.settings import check_serving_parameter

#: What ``--executor`` takes (:mod:`infopt.run.executors` implements each).
EXECUTORS = ("local", "ray")

PROG = "run_notebooks.py"
#: The notebooks' sources, next to the package in a checkout (``--notebook-dir`` overrides).
REPO_NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as one line on stderr and exit code 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _param(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` as (name, raw text); the value is converted once the notebook's declared type is known."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    name, raw = text.split("=", 1)
    if not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a parameter name, got {text!r}")
    return name.strip(), raw


def _device_target(text: str) -> str:
    """A target's canonical text (``cuda``, ``cpu@zone=a``); its syntax is checked here, the device later."""
    try:
        return parse_target(text).text
    except InfoptError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


#: Notebook parameters the runner sets itself, and the flag that sets each (None: the runner alone).
RUNNER_PARAMETERS = {
    "model": "--models", "device": "--device", "batch_sizes": "--batch-sizes", "quick": "--quick",
    "size": "--quick", "output_dir": "--output and --run-name", "results_dir": "--output", "run_name": "--run-name",
    "overwrite": "--resume", "peaks_path": None, "interactive": None,
    "data": "--data", "accuracy_budget": "--accuracy-budget",
}


#: Rules beyond the declared type, the same the named flags apply.
_POSITIVE_INTS = {"seq_len", "batch_size", "timeline_batch_size", "active", "new_tokens", "kv_prompt_len",
                  "kv_new_tokens"}
_POSITIVE_INT_LISTS = {"prompt_lengths": False, "no_cache_prompt_lengths": True}  # name: may be empty
_POSITIVE_NUMBERS = {"max_time_s", "optimize_budget_s"}
_CHOICES = {"search": SEARCHES}  # text parameters that take one of a few words
_STRING_LISTS = {"variants"}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "list": "a JSON list", "dict": "a JSON object"}



def check_param(name: str, raw: str, declared_type: str) -> object:
    """The value of ``--param name=raw`` for a parameter declared as ``declared_type``; one sentence if wrong.

    Parameters the runner sets are refused with a pointer to their flag; values must have the declared type
    (JSON syntax: ``true``, ``[1, 2]``; a ``str`` parameter takes the text as is) and pass the same checks as
    the named flags (sizes and lengths at least 1, time caps above 0).
    """
    if name in RUNNER_PARAMETERS:
        flag = RUNNER_PARAMETERS[name]
        raise InvalidInputError(f"--param {name} is set by the runner" + (f": use {flag} instead." if flag else
                                ("; headless runs have no widgets." if name == "interactive" else ".")))
    where = f"--param {name}={raw}"
    if declared_type == "str":
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        value = value if isinstance(value, str) else raw
        if name in _CHOICES and value not in _CHOICES[name]:
            raise InvalidInputError(f"{where}: must be one of {', '.join(_CHOICES[name])}.")
        return value
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidInputError(f"{where}: expected {_TYPE_WORDS.get(declared_type, declared_type)} "
                                f"(JSON syntax), got {raw!r}.") from None
    python_type = {"int": int, "float": (int, float), "bool": bool, "list": list, "dict": dict}.get(declared_type)
    if python_type is not None and (not isinstance(value, python_type)
                                    or (declared_type in ("int", "float") and isinstance(value, bool))):
        raise InvalidInputError(f"{where}: expected {_TYPE_WORDS[declared_type]}, got {raw!r}.")
    if declared_type == "float":
        value = float(value)
    if name in _POSITIVE_INTS and value < 1:
        raise InvalidInputError(f"{where}: must be at least 1.")
    if name in _POSITIVE_NUMBERS and not value > 0:
        raise InvalidInputError(f"{where}: must be above 0.")
    if name in _POSITIVE_INT_LISTS:
        if not value and not _POSITIVE_INT_LISTS[name]:
            raise InvalidInputError(f"{where}: must list at least one length.")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
            raise InvalidInputError(f"{where}: every entry must be an integer of at least 1.")
    if name in _STRING_LISTS and not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidInputError(f"{where}: every entry must be a non-empty string.")
    try:  # the serve notebook's rules (bound, percentile, batcher grid, scenarios)
        check_serving_parameter(name, value)
    except InvalidInputError as error:
        raise InvalidInputError(f"{where}: {error}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROG,
        description="Execute the infopt notebooks headless for each model on each device target, then the report.",
    )
    parser.add_argument("--device", nargs="+", default=None, type=_device_target, metavar="TARGET",
                        help="one or more device targets to measure on, each in its own <target>/ folder and one "
                             "after another with the local executor; auto = cuda, then mps, then cpu (default: "
                             f"auto). TARGET is {TARGET_SYNTAX}, e.g. cuda@accelerator_type:H100")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                        help=f"models to run: built-in names (default: all of {', '.join(list_models())}), "
                             "torchvision:<name>, hf:<folder or cached hub id> or py:<module>:<function> "
                             "(see --list and the README's 'Your own model')")
    parser.add_argument("--notebooks", nargs="+", default=None, metavar="NOTEBOOK",
                        help=f"per-model notebooks to run (default: {' '.join(MODEL_NOTEBOOKS)}); the report always runs")
    parser.add_argument("--batch-sizes", nargs="+", type=_positive_int, default=None, metavar="N",
                        help=f"batch sizes to sweep (default: {' '.join(map(str, presets.FULL.batch_sizes))}; "
                             f"--quick: {' '.join(map(str, presets.QUICK.batch_sizes))})")
    parser.add_argument("--quick", action="store_true", default=None,
                        help="tiny model sizes and few timing iterations: a smoke run of the whole pipeline")
    parser.add_argument("--output", default="results", help="folder that holds the runs (default: results)")
    parser.add_argument("--run-name", default=None, help="run folder name (default: a UTC timestamp)")
    parser.add_argument("--timeout", type=_positive_int, default=None, metavar="SECONDS",
                        help="per-cell execution timeout in seconds (default: none)")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="torch/OpenMP threads for every notebook and the reference workload (default: torch's "
                             "own, one per core); on a shared VM fewer threads than cores time far more steadily, "
                             "the setting for run-vs-run gates (docs/regressions.md)")
    parser.add_argument("--html", action=argparse.BooleanOptionalAction, default=None,
                        help="also export every executed notebook to HTML (default: on)")
    parser.add_argument("--list", action="store_true",
                        help="list models, devices and notebook parameters, then exit")
    parser.add_argument("--resume", action="store_true",
                        help="continue an existing run folder with its recorded settings, skipping notebooks "
                             "that already succeeded (other flags must match the run's settings or be left out)")
    parser.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                        help="extra notebook parameter (JSON value, checked against its declared type) passed to "
                             "every notebook that declares it; parameters with a flag of their own are refused")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: one notebook after another on this machine (default); ray: one Ray task per "
                             "notebook, model and device, over the GPUs and hosts of a Ray cluster (README: "
                             "'More than one machine')")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="Ray cluster to send jobs to with --executor ray (default: start a local Ray instance)")
    parser.add_argument("--strict-quiet", action="store_true",
                        help="refuse to measure (exit 2) when the machine check before the first timing notebook "
                             "finds other processes busy (default: say so, record it in run.json, carry on)")
    parser.add_argument("--ab", nargs=2, default=None, metavar=("BASELINE_SPEC", "CANDIDATE_SPEC"),
                        help="A/B: time two model specs against each other in alternating blocks per batch size and "
                             "give the time ratio, its interval and a verdict (docs/regressions.md)")
    parser.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                        help="log the run to MLflow (default store: <output>/mlruns; needs the 'history' extra)")
    parser.add_argument("--data", default=None, metavar="SPEC",
                        help="your data for the accuracy guard and calibration: imagefolder:<dir>, sklearn:<name>, "
                             "text:<file> or py:<module>:<function> (docs/data.md)")
    parser.add_argument("--accuracy-budget", type=_non_negative_float, default=None, metavar="X",
                        help="largest accepted loss with --data, in the metric's unit (default: 1 point of top-1, "
                             "2%% relative perplexity)")
    parser.add_argument("--notebook-dir", default=None, help=argparse.SUPPRESS)
    return parser


def notebook_parameters(path: Path) -> dict:
    """Declared parameters of a notebook (``papermill.inspect_notebook``)."""
    import papermill

    return papermill.inspect_notebook(str(path))


def list_everything(notebook_dir: Path) -> None:
    print(f"models: {' '.join(list_models())}")
    print(f"  {spec_help()}")
    print(f"devices: {' '.join(DEVICE_CHOICES)} cuda:N; --device takes several targets, each {TARGET_SYNTAX}")
    for name in [*MODEL_NOTEBOOKS, REPORT_NOTEBOOK]:
        path = notebook_dir / f"{name}.ipynb"
        if not path.is_file():
            print(f"\n{name}: missing ({path})")
            continue
        print(f"\n{name} ({path}) parameters:")
        for param in notebook_parameters(path).values():
            print(f"  {param['name']}: {param['inferred_type_name']} = {param['default']}  {param['help']}")


__all__ = ["PROG", "REPO_NOTEBOOKS", "RUNNER_PARAMETERS", "build_parser", "check_param", "list_everything",
           "notebook_parameters"]
