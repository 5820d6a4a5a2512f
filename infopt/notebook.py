"""The set-up every notebook runs after its parameters cell, as one function instead of pasted cell code.

A model notebook's second cell is::

    nb = infopt.notebook.model_notebook(model, device, size, output_dir)
    wrapper, out, charts, label = nb.wrapper, nb.out, nb.charts, nb.label

so what a notebook does beyond that is only its own measurements and display.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from infopt.errors import InvalidInputError
from infopt.layout import RunLayout, chart_folder, model_output_folder, report_output_folder


class ModelNotebook(NamedTuple):
    """What a model notebook works with after set-up."""

    wrapper: Any      # the loaded infopt model wrapper
    out: Path         # the model folder results are written to
    charts: Path      # where charts are saved
    label: str        # cpu | cuda | mps: used in file names
    results_dir: Path  # the folder holding this run and the runs next to it (the Explore section reads it)


class ReportNotebook(NamedTuple):
    out: Path
    charts: Path


def model_notebook(model: str, device: str, size: str, output_dir: str) -> ModelNotebook:
    """Output folder, chart folder and the loaded model for a per-model notebook; prints where results go.
    (Charts go through :func:`infopt.report.plots.show`, which needs no renderer set up.)"""
    from infopt import load_model
    from infopt.devices import device_kind

    wrapper = load_model(model, device=device, size=size)  # first: a model that fails to load leaves no folder
    out = model_output_folder(output_dir, model, device)
    label = device_kind(wrapper.device)
    print(f"{wrapper} -> results in {out}")
    results_dir = RunLayout.of_model_folder(out).results_dir
    use_compile_cache(results_dir)
    return ModelNotebook(wrapper, out, chart_folder(out), label, results_dir)


def use_compile_cache(results_dir: Path) -> Path:
    """Inductor's caches in ``<results>/.inductor-cache/<host>``: a graph compiled once is reused across batch
    sizes, notebooks and later runs on this machine (a ``TORCHINDUCTOR_CACHE_DIR`` already set wins)."""
    import os

    from infopt.names import safe_name
    from infopt.run.clock import hostname

    try:  # torch writes its default (a temporary folder) into the environment once it has looked it up
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
        torch_default = os.path.abspath(default_cache_dir())
    except ImportError:
        torch_default = None
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == torch_default:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(results_dir) / ".inductor-cache" / safe_name(hostname()))
    folder = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def report_notebook(output_dir: str) -> ReportNotebook:
    """Output and chart folders for the report notebook."""
    out = report_output_folder(output_dir)
    return ReportNotebook(out, chart_folder(out))


def device_peaks_once(device, peaks_path: str = "", *, quick: bool = False) -> dict:
    """Device peaks, measured at most once per run: read ``peaks_path`` if it exists, else measure and save it.

    The peaks belong to the device, not the model, so the runner hands every
    profile notebook of a run the same path (``RunLayout.peaks_file``). A file
    measured on another device, or in the other (quick/full) mode, is refused
    rather than reused.
    """
    from infopt.analyze.peaks import device_peaks
    from infopt.results import save_json

    path = Path(peaks_path) if peaks_path else None
    if path is not None and path.is_file():
        peaks = json.loads(path.read_text())
        if not isinstance(peaks, dict) or peaks.get("device") != str(device) \
                or bool(peaks.get("quick")) != bool(quick):
            found = (peaks.get("device"), peaks.get("quick")) if isinstance(peaks, dict) else ("?", "?")
            raise InvalidInputError(f"{path} holds peaks of {found[0]} (quick={found[1]}), "
                                    f"not of {device} (quick={quick}).")
        return peaks
    peaks = device_peaks(device, quick=quick)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_json(peaks, path)
    return peaks




# -- sources -----------------------------------------------------------------------
#: The notebooks' sources are jupytext percent-format scripts (``notebooks/<name>.py``, real code a linter
#: reads); the ``.ipynb`` next to each, which papermill and JupyterLab open, is generated from it.
NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def build_notebook(source: str | Path):
    """The clean ``.ipynb`` (no outputs, stable cell ids) generated from one percent-format source."""
    import jupytext
    import nbformat

    source = Path(source)
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    for index, cell in enumerate(nb.cells):
        cell.id = f"{source.stem}-{index:02d}"
        cell.metadata = {"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    return nb


def notebook_sources(folder: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    """Every percent-format notebook source in ``folder``."""
    return sorted(path for path in Path(folder).glob("*.py") if not path.name.startswith("_"))


def stale_notebooks(folder: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    """The ``.ipynb`` files that differ from what their source generates (or are missing)."""
    import nbformat

    stale = []
    for source in notebook_sources(folder):
        target = source.with_suffix(".ipynb")
        if not target.is_file() or target.read_text(encoding="utf-8") != nbformat.writes(build_notebook(source)) + "\n":
            stale.append(target)
    return stale


def sync_notebooks(folder: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    """Regenerate every stale ``.ipynb`` from its source (``python -m infopt.notebook``); returns those written."""
    import nbformat

    from infopt.results import atomic_path

    written = []
    for target in stale_notebooks(folder):
        with atomic_path(target) as temporary:
            temporary.write_text(nbformat.writes(build_notebook(target.with_suffix(".py"))) + "\n", encoding="utf-8")
        written.append(target)
    return written


__all__ = ["ModelNotebook", "NOTEBOOKS_DIR", "ReportNotebook", "build_notebook", "device_peaks_once", "model_notebook",
           "notebook_sources", "report_notebook", "stale_notebooks", "sync_notebooks", "use_compile_cache"]


if __name__ == "__main__":  # python -m infopt.notebook [--check]
    import sys

    if "--check" in sys.argv[1:]:
        stale = stale_notebooks()
        for path in stale:
            print(f"{path} differs from {path.with_suffix('.py').name}: run python -m infopt.notebook")
        sys.exit(1 if stale else 0)
    for path in sync_notebooks():
        print(f"wrote {path}")
