"""Was anything else using the machine while we timed? One figure per timed window.

CPU: the CPU time used by every process other than ours during the window
(system busy time from ``psutil.cpu_times()``, i.e. user + nice + system + irq
+ softirq + steal, minus our own process's user + system time), divided by
the window's wall time: **cores in use by others, on average**. A window is
flagged when that figure exceeds :data:`CPU_THRESHOLD_CORES` (0.25 of a core)
by more than the kernel clock's resolution (:func:`_resolution_cores`: three
clock ticks over the window, so very short windows are not flagged for
rounding). A quarter of a core is well above what an idle desktop's daemons
use and well below one busy thread, the smallest load that measurably slows a
multi-threaded forward on a small machine.

CUDA: through NVML (``nvidia-ml-py``, optional; :mod:`infopt.measure.nvml_watch`):
other processes holding the GPU, their utilisation during the window, and
clock slowdowns (power cap, thermal, hardware). A check that could not run
says ``"not checked"``, never "clean".

Use :func:`watch` around any timed code (``with watch(device) as window:``
then ``window.result``); :func:`check_machine` samples the machine for a few
seconds before a run and names the busiest other processes.

Checks of a run's results, for the report and the terminal summary:
:func:`quality_counts` (flagged, non-converged and too-few-samples rows),
:func:`disagreements` (the optimize baseline against the same point of the
benchmark sweep of the same run) and :func:`ci_text` ("too few samples"
instead of a bare NaN).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Iterable

import pandas as pd
import psutil
import torch

from infopt.measure.nvml_watch import GPU_THRESHOLD_PERCENT, GpuWatch

#: Cores of CPU time used by other processes, on average over a timed window, above which it is flagged.
CPU_THRESHOLD_CORES = 0.25
#: Columns every timed row carries.
INTERFERENCE_COLUMNS = ("interference", "interference_detail")
_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def _busy_s(times) -> float:
    """System busy seconds (all CPUs), as psutil's own ``cpu_percent`` counts them."""
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def _system_busy_s() -> float:
    """Busy seconds of the CPUs this process may run on: all of them, or its pinned share (a Ray GPU job's
    slice, :func:`infopt.run.ray_executor.pin_cpu_share`), where another job's load does not compete."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if allowed and len(allowed) < (psutil.cpu_count() or 0):
        per_cpu = psutil.cpu_times(percpu=True)
        return sum(_busy_s(per_cpu[index]) for index in allowed if index < len(per_cpu))
    return _busy_s(psutil.cpu_times())


def _own_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _resolution_cores(window_s: float) -> float:
    """Rounding of the kernel's CPU-time counters (whole clock ticks), as cores over the window."""
    return 3 * _TICK_S / window_s if window_s > 0 else math.inf


@dataclass
class Interference:
    """What else used the machine during one timed window."""

    flagged: bool
    detail: str
    other_cpu_cores: float = math.nan
    window_s: float = 0.0
    gpu: str = "not checked"

    def columns(self) -> dict:
        """``{"interference": ..., "interference_detail": ...}`` for a result row."""
        return {"interference": self.flagged, "interference_detail": self.detail}


def combine(results: Iterable["Interference"]) -> Interference:
    """One verdict for several windows of one row: flagged if any was; the busiest window's figure."""
    results = [result for result in results if result is not None]
    if not results:
        return Interference(False, "not measured")
    flagged = [result for result in results if result.flagged]
    worst = max(flagged or results, key=lambda r: -1.0 if math.isnan(r.other_cpu_cores) else r.other_cpu_cores)
    details = list(dict.fromkeys(result.detail for result in (flagged or [worst])))
    return Interference(bool(flagged), "; ".join(details), worst.other_cpu_cores,
                        sum(result.window_s for result in results), worst.gpu)


# -- the window ---------------------------------------------------------------------
class watch:  # noqa: N801 - used as a context manager, like contextlib's
    """Context manager measuring interference over the block: ``with watch(device) as window: ...``.

    After the block, ``window.result`` is an :class:`Interference`. Costs two
    reads of ``/proc`` (microseconds), so it can wrap every timed point.
    """

    def __init__(self, device: str | torch.device = "cpu", threshold_cores: float = CPU_THRESHOLD_CORES):
        self.device = torch.device(device)
        self.threshold = threshold_cores
        self.process = psutil.Process()
        self.gpu = GpuWatch(self.device) if self.device.type == "cuda" else None
        self.result: Interference | None = None

    def __enter__(self) -> "watch":
        if self.gpu is not None:
            self.gpu.start()
        self._busy, self._own, self._t0 = _system_busy_s(), _own_s(self.process), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        window = time.perf_counter() - self._t0
        others_s = max(0.0, (_system_busy_s() - self._busy) - (_own_s(self.process) - self._own))
        cores = others_s / window if window > 0 else math.nan
        cpu_flag = cores > self.threshold + _resolution_cores(window)
        detail = f"other processes used {cores:.2f} CPU cores (threshold {self.threshold:g}) over {window:.2f} s"
        gpu_flag, gpu_text = False, ""
        if self.gpu is not None:
            gpu_flag, gpu_text = self.gpu.stop()
            detail += f"; {gpu_text}"
        self.result = Interference(cpu_flag or gpu_flag, detail, cores, window, gpu_text or "n/a (not a GPU)")


# -- before a run -------------------------------------------------------------------
@dataclass
class MachineCheck:
    """The machine's state before a run: the figure, the verdict and the busiest other processes."""

    busy: bool
    other_cpu_cores: float
    seconds: float
    threshold_cores: float = CPU_THRESHOLD_CORES
    top_processes: list[dict] = field(default_factory=list)
    gpu: str = "not checked"

    @property
    def line(self) -> str:
        """One line for the terminal."""
        top = ", ".join(f"{p['name']} (pid {p['pid']}, {p['cores']:.2f} cores)" for p in self.top_processes)
        verdict = "BUSY" if self.busy else "quiet"
        text = (f"Machine {verdict}: other processes used {self.other_cpu_cores:.2f} CPU cores on average over "
                f"{self.seconds:.1f} s (threshold {self.threshold_cores:g})")
        if self.busy and sum(p["cores"] for p in self.top_processes) < 0.5 * self.other_cpu_cores:
            text += "; most of it from processes that started or ended during the check"
        return text + (f"; busiest: {top}" if top and self.busy else "") + (
            f"; {self.gpu}" if self.gpu not in ("not checked", "n/a (not a GPU)") else "")

    def to_dict(self) -> dict:
        return {"busy": self.busy, "other_cpu_cores": self.other_cpu_cores, "seconds": self.seconds,
                "threshold_cores": self.threshold_cores, "top_processes": self.top_processes, "gpu": self.gpu,
                "line": self.line}


def _process_cpu_s() -> dict[int, tuple[str, float]]:
    found = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info.get("cpu_times")
        if times is not None:
            found[process.pid] = (process.info.get("name") or "?", times.user + times.system)
    return found


def check_machine(seconds: float = 3.0, device: str | torch.device = "cpu", *, top: int = 3) -> MachineCheck:
    """Sample the machine for ``seconds`` while this process sleeps: cores used by others, busiest processes."""
    if not seconds > 0:
        from infopt.errors import InvalidInputError

        raise InvalidInputError(f"check_machine needs a positive number of seconds, got {seconds!r}.")
    before = _process_cpu_s()
    with watch(device) as window:
        time.sleep(seconds)
    after = _process_cpu_s()
    ours = os.getpid()
    usage = [{"pid": pid, "name": name, "cores": (cpu - before[pid][1]) / window.result.window_s}
             for pid, (name, cpu) in after.items() if pid in before and pid != ours]
    usage = sorted((u for u in usage if u["cores"] > 0.01), key=lambda u: -u["cores"])[:top]
    result = window.result
    return MachineCheck(result.flagged, result.other_cpu_cores, result.window_s, window.threshold,
                        [{**u, "cores": round(u["cores"], 3)} for u in usage], result.gpu)


# -- a deliberate load (tests and demonstrations) --------------------------------------
_SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


class BackgroundLoad:
    """``processes`` child processes spinning on the CPU, bounded in time: a reproducible busy machine.

    Each child exits by itself after ``max_seconds`` whatever happens to the
    parent; :meth:`stop` (or leaving the ``with`` block) ends them at once.
    :meth:`pause` / :meth:`resume` (SIGSTOP / SIGCONT) make a load that comes
    and goes without the cost of starting processes.
    """

    def __init__(self, processes: int = 2, max_seconds: float = 60.0):
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1 or not max_seconds > 0:
            from infopt.errors import InvalidInputError

            raise InvalidInputError("BackgroundLoad needs at least one process and a positive time bound.")
        self.processes, self.max_seconds = processes, max_seconds
        self.children: list = []

    def start(self) -> "BackgroundLoad":
        import subprocess
        import sys

        code = _SPIN.format(seconds=float(self.max_seconds))
        self.children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.processes)]
        time.sleep(0.2)  # let them reach the loop
        return self

    def _signal(self, number) -> None:
        for child in self.children:
            if child.poll() is None:
                os.kill(child.pid, number)

    def pause(self) -> None:
        import signal

        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            child.wait(timeout=10)
        self.children = []

    def __enter__(self) -> "BackgroundLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- checks of a run's results ------------------------------------------------------
#: Relative slack allowed, beyond both CIs, between two measurements of the same point in one run.
CONSISTENCY_TOLERANCE = 0.10
DISAGREE_MESSAGE = "this run's measurements disagree with each other"


def flag_is_set(value) -> bool:
    """A boolean column read back from CSV or JSON (True, 1, "true", "True") is set."""
    return value is True or value == 1 or str(value).strip().lower() == "true"


def ci_text(low, high, unit: str = " ms", digits: int = 4) -> str:
    """``"[low, high] ms"``, or ``"too few samples"`` where the CI is missing (fewer samples than it needs)."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "too few samples"
    return f"[{low:.{digits}g}, {high:.{digits}g}]{unit}"


def quality_counts(df: pd.DataFrame, ci_columns: tuple[str, str] = ("latency_ci_low_ms", "latency_ci_high_ms")) -> dict:
    """Counts of rows that ran (``status="ok"``): flagged for interference, not converged, too few samples for a CI."""
    ran = df[df["status"] == "ok"] if "status" in df else df
    counts = {"rows": int(len(ran)), "interference": 0, "not_converged": 0, "too_few_samples": 0}
    if "interference" in ran:
        counts["interference"] = int(ran["interference"].map(flag_is_set).sum())
    if "converged" in ran:
        counts["not_converged"] = int((~ran["converged"].map(flag_is_set)).sum())
    if all(column in ran for column in ci_columns):
        counts["too_few_samples"] = int((ran[ci_columns[0]].isna() | ran[ci_columns[1]].isna()).sum())
    return counts


def quality_line(df: pd.DataFrame, ci_columns: tuple[str, str] = ("latency_ci_low_ms", "latency_ci_high_ms")) -> str:
    """:func:`quality_counts` in one sentence, with what to do about each kind of row."""
    counts = quality_counts(df, ci_columns)
    parts = []
    if counts["interference"]:
        parts.append(f"{counts['interference']} timed on a busy machine (interference: rerun on a quiet one)")
    if counts["not_converged"]:
        parts.append(f"{counts['not_converged']} not converged (more time per point: --param max_time_s=...)")
    if counts["too_few_samples"]:
        parts.append(f"{counts['too_few_samples']} with too few samples for a CI")
    if not parts:
        return f"All {counts['rows']} timed rows are converged, with a CI, on a quiet machine."
    return f"Of {counts['rows']} timed rows: " + ", ".join(parts) + "."


def disagreements(benchmark: pd.DataFrame, optimize: pd.DataFrame, *,
                  tolerance: float = CONSISTENCY_TOLERANCE) -> pd.DataFrame:
    """Each model's eager-fp32 baseline in the optimize results against the same point of the benchmark sweep.

    Same run, same model, device, batch size and sequence length: the two
    medians should agree. They *disagree* when their 95% CIs, each widened by
    ``tolerance`` (relative), do not overlap (a missing CI counts as the
    median alone). A disagreement means the machine changed between the two
    notebooks: neither figure can be trusted without a rerun. One row per
    shared point: both medians and CIs, ``ratio`` (optimize / benchmark),
    ``agree`` and ``message``.
    """
    shared = [key for key in ("run", "seq_len") if key in benchmark and key in optimize]  # run: gathered results
    keys = ["model", "device", "batch_size"] + shared
    wanted = ["latency_p50_ms", "latency_ci_low_ms", "latency_ci_high_ms"]

    def pick(frame: pd.DataFrame, tag: str) -> pd.DataFrame:
        rows = frame[(frame["status"] == "ok") & (frame.get("variant", "eager-fp32") == "eager-fp32")]
        rows = rows[keys + wanted].drop_duplicates(keys, keep="last")
        if "seq_len" in keys:  # vision rows have no sequence length, and NaN never matches NaN in a merge
            rows = rows.assign(seq_len=pd.to_numeric(rows["seq_len"]).fillna(-1))
        return rows.rename(columns={c: f"{tag}_{c.replace('latency_', '')}" for c in wanted})

    merged = pick(benchmark, "benchmark").merge(pick(optimize, "optimize"), on=keys, how="inner")
    if "seq_len" in keys:
        merged["seq_len"] = merged["seq_len"].where(merged["seq_len"] >= 0)
    out = []
    for row in merged.to_dict("records"):
        bounds = {}
        for tag in ("benchmark", "optimize"):
            low, high, mid = row[f"{tag}_ci_low_ms"], row[f"{tag}_ci_high_ms"], row[f"{tag}_p50_ms"]
            low, high = (mid, mid) if pd.isna(low) or pd.isna(high) else (low, high)
            bounds[tag] = (low * (1 - tolerance), high * (1 + tolerance))
        agree = bounds["benchmark"][0] <= bounds["optimize"][1] and bounds["optimize"][0] <= bounds["benchmark"][1]
        ratio = row["optimize_p50_ms"] / row["benchmark_p50_ms"]
        message = ("consistent" if agree else
                   f"{DISAGREE_MESSAGE}: {row['model']} batch {row['batch_size']} baseline median "
                   f"{row['optimize_p50_ms']:.4g} ms in optimize vs {row['benchmark_p50_ms']:.4g} ms in benchmark "
                   f"({ratio:.2f}x, beyond both CIs + {tolerance:.0%})")
        out.append({**row, "ratio": ratio, "agree": agree, "message": message})
    columns = keys + [f"{tag}_{c}" for tag in ("benchmark", "optimize") for c in ("p50_ms", "ci_low_ms", "ci_high_ms")]
    return pd.DataFrame(out, columns=columns + ["ratio", "agree", "message"])


def quality_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per notebook result (``{"benchmark": df, ...}``), run and model: the :func:`quality_counts` of its rows.

    Only groups with something to report are kept; an empty table means every timed row is clean, converged
    and has its CI.
    """
    rows = []
    for name, frame in frames.items():
        if frame is None or frame.empty or "status" not in frame:
            continue
        ci = ("tpot_ci_low_ms", "tpot_ci_high_ms") if "tpot_ci_low_ms" in frame else (
            "latency_ci_low_ms", "latency_ci_high_ms")
        keys = [key for key in ("run", "model", "device") if key in frame]
        for values, group in frame.groupby(keys, sort=True) if keys else [((), frame)]:
            values = values if isinstance(values, tuple) else (values,)
            counts = quality_counts(group, ci)
            if counts["interference"] or counts["not_converged"] or counts["too_few_samples"]:
                rows.append({"results": name, **dict(zip(keys, values)), **counts})
    return pd.DataFrame(rows, columns=["results", "run", "model", "device", "rows", "interference", "not_converged",
                                       "too_few_samples"])


#: Timed result files of a run (``{model}_{device}_{kind}.csv``) and the CI columns of each kind.
TIMED_KINDS = {"results": ("latency_ci_low_ms", "latency_ci_high_ms"),
               "variants": ("latency_ci_low_ms", "latency_ci_high_ms"),
               "generation": ("tpot_ci_low_ms", "tpot_ci_high_ms"),
               "generation_variants": ("tpot_ci_low_ms", "tpot_ci_high_ms")}


def run_quality_lines(run_dir) -> list[str]:
    """One line per timed result file of a run with flagged, non-converged or too-few-samples rows (else none).

    For the runner's terminal summary; the report shows the same counts (:func:`quality_counts`).
    """
    from pathlib import Path

    lines = []
    for kind, ci_columns in TIMED_KINDS.items():
        longer = [other for other in TIMED_KINDS if other != kind and other.endswith(f"_{kind}")]
        for path in sorted(Path(run_dir).glob(f"**/*_{kind}.csv")):
            if any(path.stem.endswith(f"_{other}") for other in longer):
                continue  # *_generation_variants.csv is not a *_variants.csv: its CI is the TPOT's
            try:
                frame = pd.read_csv(path)
                counts = quality_counts(frame, ci_columns)
            except (OSError, ValueError, KeyError, pd.errors.ParserError):
                continue
            if counts["interference"] or counts["not_converged"] or counts["too_few_samples"]:
                lines.append(f"  {path.stem}: {quality_line(frame, ci_columns)}")
    return lines


__all__ = ["BackgroundLoad", "CONSISTENCY_TOLERANCE", "CPU_THRESHOLD_CORES", "DISAGREE_MESSAGE", "flag_is_set",
           "GPU_THRESHOLD_PERCENT", "INTERFERENCE_COLUMNS", "Interference", "MachineCheck", "check_machine", "ci_text", "combine",
           "disagreements", "quality_counts", "quality_line", "quality_table", "run_quality_lines", "watch"]
