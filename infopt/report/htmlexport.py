"""Executed notebooks to shareable HTML pages: code hidden, charts drawn by one shared plotly.js, no CDN.

The notebooks store charts as Plotly JSON only (see :func:`infopt.report.plots.use_notebook_renderer`),
so an ``.ipynb`` stays small and JupyterLab draws it. Exporting turns each
chart into a ``<div>`` plus a ``Plotly.newPlot`` call and loads plotly.js once
per page from the run's shared ``plotly.min.js`` (a relative path, so the page
works offline from ``file://``). The page template is JupyterLab's, minus the
require.js, MathJax, Mermaid and widget scripts it would fetch from a CDN.
"""

from __future__ import annotations

import functools
from pathlib import Path

from infopt.report import plots

PLOTLY_MIME = "application/vnd.plotly.v1+json"

_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}
{%- if resources.plotly_js -%}<script src="{{ resources.plotly_js }}" charset="utf-8"></script>{%- endif -%}
{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _plotly_to_html(nb) -> int:
    """Give every Plotly JSON output an HTML chart div (what the exporter renders); returns how many."""
    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data") or {}
            if PLOTLY_MIME in data and "text/html" not in data:
                data["text/html"] = plots.figure_div(data[PLOTLY_MIME])
                count += 1
    return count


@functools.lru_cache(maxsize=2)
def _exporter(show_code: bool):
    """Built once per setting: loading the templates costs about a second."""
    import jinja2
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", template_file="infopt_page.html.j2",
                        extra_loaders=[jinja2.DictLoader({"infopt_page.html.j2": _TEMPLATE})],
                        exclude_input=not show_code, exclude_input_prompt=not show_code,
                        exclude_output_prompt=not show_code)


def notebook_to_html(nb, page_folder: str | Path, *, plotly_js: str | Path | None = None,
                     show_code: bool = False, title: str | None = None) -> str:
    """The HTML page of a notebook node that will live in ``page_folder``.

    ``plotly_js`` is the shared script (default: :func:`infopt.report.plots.shared_plotly_js`
    of the folder); it is written if missing, and only when the page has a chart.
    """
    import copy

    nb = copy.deepcopy(nb)
    resources = {}
    if _plotly_to_html(nb):
        script = plots.write_plotly_js(plotly_js or plots.shared_plotly_js(page_folder))
        resources["plotly_js"] = plots.relative_src(script, Path(page_folder))
    if title:
        nb.metadata["title"] = title
    body, _ = _exporter(bool(show_code)).from_notebook_node(nb, resources=resources)
    return body


def export_html(notebook_path: str | Path, target: str | Path | None = None, *,
                plotly_js: str | Path | None = None, show_code: bool = False) -> Path:
    """Write ``<notebook>.html`` next to the executed notebook (code hidden unless ``show_code``)."""
    import nbformat

    from infopt.results import atomic_path

    notebook_path = Path(notebook_path)
    target = Path(target) if target else notebook_path.with_suffix(".html")
    nb = nbformat.read(str(notebook_path), as_version=4)
    body = notebook_to_html(nb, target.parent, plotly_js=plotly_js, show_code=show_code)
    with atomic_path(target) as temporary:
        temporary.write_text(body, encoding="utf-8")
    return target


__all__ = ["PLOTLY_MIME", "export_html", "notebook_to_html"]
