"""Saving and loading results: CSV for people, JSON for provenance.

``save_results`` writes ``{model}_{device}_{kind}.csv`` (scalar columns) and
``.json`` (schema version, config, environment, every row and the raw
per-row sample lists). Writes are atomic (temporary file in the same
directory, then ``os.replace``) and an existing run is never overwritten
unless ``overwrite=True``. ``load_results`` reads one file or a whole tree back
into one DataFrame, skipping corrupt or foreign files with a warning naming
each one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infopt.errors import InfoptError
from infopt.layout import MANIFEST_NAME
from infopt.names import safe_name

SCHEMA_VERSION = 1
#: Every results JSON starts with this, which lets a tree scan reject foreign
#: JSON (profiler traces, notebooks' artefacts) without parsing it.
_JSON_MARKER = '{"schema_version"'


class ResultsExistError(InfoptError, FileExistsError):
    """A results file already exists and overwriting was not asked for."""


class ResultsFormatError(InfoptError, ValueError):
    """A file is not a readable infopt results file."""


# -- JSON safety ------------------------------------------------------------------
def to_jsonable(value: Any) -> Any:
    """Convert numpy/pandas/torch scalars and containers to plain JSON types; NaN/inf/NA become ``None``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (pd.Timestamp, _dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if value is pd.NA or value is pd.NaT:
        return None
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return to_jsonable(value.detach().cpu().tolist())
        if isinstance(value, (torch.device, torch.dtype)):
            return str(value)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return str(value)


# -- atomic writes ----------------------------------------------------------------
#: Mode of every file written here: readable by all, writable by the owner (mkstemp alone gives 0600).
#: Explicit, so writing never touches the process-wide umask (other threads may be creating files).
FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    A crash or exception leaves the old file (or nothing) in place, never a
    half-written one. Files get :data:`FILE_MODE`, not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp_name)
        os.chmod(temp_name, FILE_MODE)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise ResultsExistError(
            f"Refusing to overwrite existing results {', '.join(existing)}: "
            "pass overwrite=True or choose another directory."
        )


def save_json(obj: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Atomically write ``obj`` as JSON (NaN becomes ``null``); refuses to overwrite unless asked."""
    path = Path(path)
    _refuse_existing([path], overwrite)
    _atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")
    return path


# -- results files ----------------------------------------------------------------
def results_paths(out_dir: str | Path, model: str, device: str, kind: str = "results") -> dict[str, Path]:
    """Where :func:`save_results` writes: ``{"csv": ..., "json": ...}``."""
    stem = f"{safe_name(model)}_{safe_name(device)}_{safe_name(kind)}"
    out = Path(out_dir)
    return {"csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}


def _is_list_column(series: pd.Series) -> bool:
    return series.dtype == object and series.map(lambda v: isinstance(v, (list, tuple, np.ndarray, dict))).any()


def save_results(df: pd.DataFrame, out_dir: str | Path, model: str, device: str, kind: str = "results", *,
                 config: dict | None = None, env: dict | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Write ``df`` as ``{model}_{device}_{kind}.csv`` and ``.json`` (atomically).

    The CSV holds the scalar columns; list-valued columns (raw samples) go only
    to the JSON, under ``raw_samples`` (one dict per row, same order as
    ``rows``). ``env`` defaults to :func:`infopt.env.collect`. Raises
    :class:`ResultsExistError` if either file exists and ``overwrite`` is False.
    """
    if not isinstance(df, pd.DataFrame):
        raise InfoptError(f"save_results needs a pandas DataFrame, got {type(df).__name__}.")
    paths = results_paths(out_dir, model, device, kind)
    _refuse_existing(list(paths.values()), overwrite)
    if env is None:
        from infopt.env import collect

        env = collect()
    frame = df.reset_index(drop=True)
    list_columns = [column for column in frame.columns if _is_list_column(frame[column])]
    scalars = frame.drop(columns=list_columns)
    document = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "model": model,
        "device": str(device),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "config": config or {},
        "env": env,
        "columns": [str(column) for column in frame.columns],
        "rows": scalars.to_dict(orient="records"),
        "raw_samples": frame[list_columns].to_dict(orient="records") if list_columns else [],
    }
    text = json.dumps(to_jsonable(document), indent=1, allow_nan=False) + "\n"
    if not _has_marker(text[:64]):  # pragma: no cover - guards the marker the loader relies on
        raise AssertionError("results JSON must start with its schema_version key")
    _atomic_write_text(paths["json"], text)
    _atomic_write_text(paths["csv"], scalars.to_csv(index=False))
    return paths


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def numeric_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn object columns that hold only numbers and missing values (None) into numeric dtypes (NaN).

    Sweeps write ``None`` where a metric does not apply (e.g. ``tokens_per_s``
    of a vision model); numeric dtypes keep such columns plottable.
    """
    for column in frame.columns:
        series = frame[column]
        if series.dtype == object and series.dropna().map(_is_number).all():
            frame[column] = pd.to_numeric(series)
    return frame


def _has_marker(head: str) -> bool:
    return "".join(head.split()).startswith(_JSON_MARKER)


# -- loading ---------------------------------------------------------------------
def _check_shape(path: Path, document: dict) -> None:
    """Valid JSON of the wrong shape (``raw_samples: 5``, ``columns: 7``) is not a results file."""
    if not all(isinstance(row, dict) for row in document["rows"]):
        raise ResultsFormatError(f"{path}: 'rows' must be a list of objects.")
    raw = document.get("raw_samples")
    if raw is not None and not (isinstance(raw, list) and all(isinstance(entry, dict) for entry in raw)):
        raise ResultsFormatError(f"{path}: 'raw_samples' must be a list of objects.")
    columns = document.get("columns")
    if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        raise ResultsFormatError(f"{path}: 'columns' must be a list of names.")
    for key in ("config", "env"):
        if document.get(key) is not None and not isinstance(document[key], dict):
            raise ResultsFormatError(f"{path}: '{key}' must be an object.")


def _read_json(path: Path) -> pd.DataFrame:
    with open(path, encoding="utf-8") as stream:
        if not _has_marker(stream.read(64)):
            raise ResultsFormatError(f"{path} is not an infopt results JSON.")
        stream.seek(0)
        try:
            document = json.load(stream)
        except json.JSONDecodeError as error:
            raise ResultsFormatError(f"{path} is corrupt JSON ({error}).") from error
    if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
        raise ResultsFormatError(f"{path} has no 'rows' list.")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise ResultsFormatError(f"{path} has schema_version {document.get('schema_version')!r}, "
                                 f"this infopt reads {SCHEMA_VERSION}.")
    _check_shape(path, document)
    frame = pd.DataFrame(document["rows"])
    raw = document.get("raw_samples") or []
    if raw:
        if len(raw) != len(frame):
            raise ResultsFormatError(f"{path} has {len(raw)} raw-sample entries for {len(frame)} rows.")
        raw_frame = pd.DataFrame(raw)
        for column in raw_frame.columns:
            frame[column] = raw_frame[column]
    columns = document.get("columns")
    if columns and set(columns) == set(frame.columns):
        frame = frame[columns]
    frame = numeric_columns(frame)
    if "kind" not in frame.columns:
        frame["kind"] = document.get("kind")
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        # keep_default_na=False: a status such as "n/a" must stay a string, not become NaN.
        frame = pd.read_csv(path, keep_default_na=False, na_values=["", "NaN", "nan"])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ResultsFormatError(f"{path} is not a readable CSV ({error}).") from error
    if not {"model", "device"} <= set(frame.columns):
        raise ResultsFormatError(f"{path} has no model/device columns, so it is not an infopt results CSV.")
    if "kind" not in frame.columns:
        frame["kind"] = _kind_from_stem(path.stem, frame)
    return frame


def _kind_from_stem(stem: str, frame: pd.DataFrame) -> str | None:
    """The kind in ``{model}_{device}_{kind}``, using the rows' model and device (names may hold ``_``)."""
    if len(frame):
        for device in (frame["device"].iloc[0], str(frame["device"].iloc[0]).split(":")[0]):
            with contextlib.suppress(InfoptError):
                prefix = f"{safe_name(frame['model'].iloc[0])}_{safe_name(device)}_"
                if stem.startswith(prefix) and len(stem) > len(prefix):
                    return stem[len(prefix):]
    match = re.fullmatch(r".+?_.+?_(.+)", stem)
    return match.group(1) if match else None


def _read_one(path: Path) -> pd.DataFrame:
    frame = _read_json(path) if path.suffix == ".json" else _read_csv(path)
    frame["source_file"] = str(path)
    return frame


def _hidden(path: Path, root: Path) -> bool:
    """Manifests, dot-named files (temporary writes) and dot-named folders (checkpoints, caches) are not results; a run
    folder is a run whatever its name, so a dot-named folder holding a run manifest is not hidden."""
    parts = path.relative_to(root).parts
    if parts[-1].startswith(".") or parts[-1] == MANIFEST_NAME:
        return True
    folder = root
    for part in parts[:-1]:
        folder = folder / part
        if part.startswith(".") and not (folder / MANIFEST_NAME).is_file():
            return True
    return False


def _candidates(root: Path, kind: str | None) -> list[list[Path]]:
    """Each result under ``root`` as the files to try in order: the JSON (it has the raw samples too), then the
    CSV of the same stem, which holds the same rows and is read if the JSON is unreadable."""
    pattern = f"*_{safe_name(kind)}" if kind else "*"
    found = sorted(set(root.rglob(pattern + ".json")) | set(root.rglob(pattern + ".csv")))
    by_stem: dict[Path, list[Path]] = {}
    for path in found:
        if not _hidden(path, root):
            by_stem.setdefault(path.with_suffix(""), []).append(path)
    return [sorted(paths, key=lambda p: p.suffix != ".json") for _, paths in sorted(by_stem.items())]


def load_results(path_or_dir: str | Path, kind: str | None = None) -> pd.DataFrame:
    """Read one results file, or every results file under a directory, into one DataFrame.

    ``kind`` (e.g. ``"results"``, ``"generation"``) restricts a directory scan to
    ``*_{kind}.json/.csv``. Corrupt or foreign files are skipped with a warning
    naming them. Adds ``kind`` and ``source_file`` columns.
    """
    path = Path(path_or_dir)
    if not path.exists():
        raise InfoptError(f"No results at {path}: the path does not exist.")
    if path.is_file():
        if path.suffix not in (".json", ".csv"):
            raise ResultsFormatError(f"{path} is neither a .json nor a .csv results file.")
        frame = _read_one(path)
        if kind is not None:
            frame = frame[frame["kind"] == kind]
        return frame.reset_index(drop=True)
    frames = []
    for files in _candidates(path, kind):
        frame = None
        for candidate in files:
            try:
                frame = _read_one(candidate)
                break
            except (ResultsFormatError, OSError, ValueError, TypeError) as error:
                fallback = " (reading the CSV of the same result instead)" if candidate is not files[-1] else ""
                warnings.warn(f"Skipping {candidate}: {error}{fallback}", stacklevel=2)
        if frame is None:
            continue
        if kind is not None:
            frame = frame[frame["kind"] == kind]
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


__all__ = ["ResultsExistError", "ResultsFormatError", "SCHEMA_VERSION", "load_results", "numeric_columns",
           "results_paths", "safe_name", "save_json", "save_results", "to_jsonable"]
