"""The LoadGen scenarios, each one LoadGen test per setting: SingleStream (p90 as LoadGen reports it), Server at
one target rate, the Server peak (a search over ``server_target_qps`` from the queueing estimate,
judged by LoadGen), Offline (throughput).

Budgets: MLPerf's minimum query counts (hundreds of thousands) and 10-minute durations are scaled down to
``ServeSettings.budget_s`` and ``min_queries`` per test; each row records which of LoadGen's constraints held.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from infopt.names import safe_name
from infopt.serve.batcher import DynamicBatcher
from infopt.serve.loadgen_log import littles_law
from infopt.serve.settings import ServeSettings
from infopt.serve.sut import LOADGEN_SCENARIO, run_loadgen

#: How a rate counts as served under the bound (recorded with each Server row as ``verdict_basis``).
VERDICT_STRICT = "LoadGen VALID (latency constraint, minimum duration and queries, early stopping)"
VERDICT_LATENCY = "LoadGen's latency constraint with minimum duration and queries (early stopping recorded, not required)"


def early_stopping_floor(percentile: float, confidence: float = 0.99) -> int:
    """The fewest queries with which LoadGen's early stopping can accept a latency percentile at all (every query
    under the bound): the smallest n with (percentile/100)^n <= 1 - confidence; 459 for p99, 44 for p90."""
    return math.ceil(math.log(1 - confidence) / math.log(percentile / 100.0))


def min_query_count(settings: ServeSettings) -> int:
    """The minimum queries per Server test: the settings' floor, raised to what early stopping needs when
    LoadGen's VALID is required."""
    floor = early_stopping_floor(settings.percentile) if settings.strict else 1
    return max(settings.min_queries, floor)


def test_settings(scenario: str, settings: ServeSettings, *, target_qps: float | None = None,
                  expected_latency_s: float | None = None, offline_qps: float | None = None,
                  token_latencies: bool = False):
    """An ``mlperf_loadgen.TestSettings`` for one of our scenarios, scaled to the settings' budget."""
    import mlperf_loadgen as lg

    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, LOADGEN_SCENARIO[scenario])
    ts.mode = lg.TestMode.PerformanceOnly
    budget_ms = int(settings.budget_s * 1000)
    ts.min_duration_ms = budget_ms
    ts.min_query_count = settings.min_queries if scenario == "single-stream" else min_query_count(settings)
    # LoadGen stops issuing here even when its minimum counts are not met (the row then says which was not)
    needed_ms = 1000.0 * ts.min_query_count / target_qps if target_qps else 0.0
    ts.max_duration_ms = int(max(3 * budget_ms, min(1.5 * needed_ms, max_test_s(settings) * 1000)))
    ts.sample_index_rng_seed = ts.schedule_rng_seed = ts.qsl_rng_seed = settings.seed
    if scenario == "single-stream":
        ts.single_stream_expected_latency_ns = max(int((expected_latency_s or 0.01) * 1e9), 1)
        ts.single_stream_target_latency_percentile = 0.9
    elif scenario in ("server", "server-tokens"):
        ts.server_target_qps = float(target_qps)
        ts.server_target_latency_ns = int(settings.bound_ms * 1e6)
        ts.server_target_latency_percentile = settings.percentile / 100.0
        if token_latencies:
            ts.use_token_latencies = True
            ts.ttft_latency = int(settings.bound_ms * 1e6)
            ts.tpot_latency = int(settings.extras.get("tpot_bound_ms", settings.bound_ms) * 1e6)
    elif scenario == "offline":
        ts.offline_expected_qps = float(offline_qps or 100.0)
        ts.min_query_count = 1  # one query of all samples
    return ts


def _row(run, scenario: str, batcher: DynamicBatcher, settings: ServeSettings, target_qps=None) -> dict:
    summary = run.summary
    row = {"scenario": scenario, "max_batch": batcher.max_batch, "max_wait_ms": batcher.max_wait_s * 1000.0,
           "target_qps": target_qps, "bound_ms": settings.bound_ms, "percentile": settings.percentile,
           **{k: v for k, v in summary.items() if k != "summary_lines"},
           "loadgen_result": summary.get("result"), "queries": len(run.arrivals),
           "log_dir": str(run.log_dir), "summary_lines": " | ".join(summary.get("summary_lines", [])),
           "error": "; ".join(repr(e) for e in run.errors[:3]) or None}
    row.pop("result", None)
    pct_key = f"latency_p{format(settings.percentile, 'g').replace('.', '_')}_ms"
    row["latency_at_percentile_ms"] = summary.get(pct_key)
    if scenario.startswith("server"):
        strict_ok = summary.get("result") == "VALID"
        loose_ok = bool(summary.get("latency_constraint_met") and summary.get("min_duration_met")
                        and summary.get("min_queries_met"))
        row["meets_bound"] = (strict_ok if settings.strict else loose_ok) and not run.errors
        row["verdict_basis"] = VERDICT_STRICT if settings.strict else VERDICT_LATENCY
        mean_s = (summary.get("latency_mean_ms") or 0.0) / 1000.0
        law = littles_law(run.arrivals, run.completions, summary.get("scheduled_qps") or 0.0, mean_s)
        row.update({f"littles_{k}": v for k, v in law.items()})
    return row


class ScenarioRunner:
    """Runs our scenarios against one batcher; LoadGen's logs go to ``log_root/<scenario>-<label>/``."""

    def __init__(self, batcher: DynamicBatcher, library_size: int, settings: ServeSettings, log_root: str | Path,
                 label: str, *, token_latencies: bool = False, on_run: Callable[[dict], None] | None = None):
        self.batcher, self.library_size, self.settings = batcher, library_size, settings
        self.log_root, self.label, self.token_latencies = Path(log_root), label, token_latencies
        self.on_run = on_run
        self.runs: list = []

    def _run(self, scenario: str, ts, tag: str, target_qps=None) -> dict:
        log_dir = self.log_root / safe_name(f"{scenario}-{self.label}{tag}")
        run = run_loadgen(ts, self.batcher, self.library_size, log_dir, token_latencies=self.token_latencies)
        self.runs.append(run)
        row = _row(run, scenario, self.batcher, self.settings, target_qps)
        if self.on_run:
            self.on_run(row)
        return row

    def single_stream(self, expected_latency_s: float | None = None) -> dict:
        return self._run("single-stream", test_settings("single-stream", self.settings,
                                                        expected_latency_s=expected_latency_s), "")

    def offline(self, expected_qps: float) -> dict:
        """All samples in one query. LoadGen sizes that query from ``expected_qps`` x the budget; when the run
        ends before the minimum duration (expected rate too low), it runs once more at 1.5x the rate achieved."""
        row = self._run("offline", test_settings("offline", self.settings, offline_qps=expected_qps), "")
        if row.get("min_duration_met") is False and row.get("achieved_qps"):
            row = self._run("offline", test_settings("offline", self.settings,
                                                     offline_qps=1.5 * row["achieved_qps"]), "")
        return row

    def server(self, target_qps: float, tag: str | None = None, *, judged: bool = True,
               min_queries: int = 1) -> dict:
        """One Server test at ``target_qps``. ``judged=False`` (a run read for its percentiles only, not for a
        verdict): the minimum duration and ``min_queries``, not the strict minimum query count, so a slow rate
        does not take minutes."""
        scenario = "server-tokens" if self.token_latencies else "server"
        ts = test_settings(scenario, self.settings, target_qps=target_qps, token_latencies=self.token_latencies)
        tag = tag if tag is not None else f"-{target_qps:.4g}qps"
        if not judged:
            ts.min_query_count = min_queries
            ts.max_duration_ms = max(ts.max_duration_ms, int(1500 * min_queries / target_qps))
        row = self._run(scenario, ts, tag, target_qps)
        needed = self._early_stopping_rerun(row, target_qps) if judged else None
        if needed is None:
            return row
        ts.min_query_count = needed
        ts.max_duration_ms = int(1000 * max_test_s(self.settings))
        rerun = self._run(scenario, ts, f"{tag}-{needed}q", target_qps)
        rerun["early_stopping_rerun"] = (f"{row['queries']} queries met the latency bound but not early stopping "
                                         f"(LoadGen asked for {row['early_stopping_more_queries']} more): rerun "
                                         f"with {needed}")
        return rerun

    def _early_stopping_rerun(self, row: dict, target_qps: float) -> int | None:
        """The query count for one rerun of a strict test that LoadGen rejected only for early stopping (a few
        queries over the bound need more queries to be sure of the percentile, and LoadGen says how many), or
        ``None`` when no rerun is due or it would outlast one test."""
        more = row.get("early_stopping_more_queries")
        if not (self.settings.strict and more and row.get("loadgen_result") == "INVALID"
                and row.get("latency_constraint_met") and row.get("min_duration_met") and row.get("min_queries_met")):
            return None
        needed = math.ceil(1.1 * (row["queries"] + more))
        return needed if needed / target_qps <= max_test_s(self.settings) else None

    def find_peak(self, start_qps: float, high_qps: float) -> tuple[float | None, list[dict]]:
        """The highest target QPS LoadGen judges served under the bound, or ``None`` when no testable rate is.

        The search starts at ``start_qps`` (the grid passes the M/D/1 prediction from SingleStream's median,
        :mod:`infopt.serve.queueing`), clipped to [:func:`lowest_testable_qps`, ``high_qps``]. A start that
        passes is refined upwards towards ``high_qps`` (the Offline throughput); one that fails is halved
        until a rate passes, the lowest testable rate being the last one tried, then refined between the
        last pass and the first fail. ``settings.bisection_steps`` bounds the halvings and the refinement
        steps each.

        With ``settings.strict`` the bisection runs on short **screen** tests (the minimum duration and
        ``min_queries``, read on LoadGen's latency constraint alone: a strict test at a CPU's rates needs 459
        queries, up to a minute each), and only the screen's best rate is then **confirmed** by a strict test
        with LoadGen's full verdict; if that fails, lower rates (:data:`CONFIRM_STEPS`). The peak is always a
        confirmed rate. Every test's row is returned (the latency-vs-load chart draws them),
        with its ``search_phase``."""
        if not self.settings.strict:
            return self._bisect(start_qps, high_qps, self.server)
        screened, rows = self._bisect(start_qps, high_qps, self._screen)
        if screened is None:
            return None, rows
        floor = lowest_testable_qps(self.settings)
        for rate in dict.fromkeys(max(screened * step, floor) for step in CONFIRM_STEPS):
            rows.append({**self.server(rate, tag=f"-{rate:.4g}qps-confirm"), "search_phase": "confirm"})
            if rows[-1]["meets_bound"]:
                return rate, rows
        return None, rows

    def _screen(self, target_qps: float) -> dict:
        """A short Server test read on the latency constraint alone (its row says so in ``verdict_basis``)."""
        row = self.server(target_qps, tag=f"-{target_qps:.4g}qps-screen", judged=False,
                          min_queries=self.settings.min_queries)
        row["meets_bound"] = bool(row.get("latency_constraint_met") and row.get("min_duration_met")
                                  and not row.get("error"))
        return {**row, "verdict_basis": VERDICT_LATENCY, "search_phase": "screen"}

    def _bisect(self, start_qps: float, high_qps: float, test: Callable[[float], dict]
                ) -> tuple[float | None, list[dict]]:
        """The search of :meth:`find_peak` with one kind of test: the highest rate whose test passed."""
        floor = lowest_testable_qps(self.settings)
        start = min(max(start_qps, floor), high_qps)
        rows = [test(start)]
        if rows[-1]["meets_bound"]:
            good, bad = start, high_qps
        else:
            good, bad = None, start
            for _ in range(self.settings.bisection_steps):
                lower = max(bad / 2, floor)  # the lowest testable rate is the last one tried
                if lower >= bad:
                    break
                rows.append(test(lower))
                if rows[-1]["meets_bound"]:
                    good = lower
                    break
                bad = lower
            if good is None:
                return None, rows
        for _ in range(self.settings.bisection_steps):
            if bad / good < 1.05:  # within 5%: finer than a run-to-run difference of the verdict
                break
            middle = (good * bad) ** 0.5 if bad / good > 4 else (good + bad) / 2  # geometric while far apart
            rows.append(test(middle))
            if rows[-1]["meets_bound"]:
                good = middle
            else:
                bad = middle
        return good, rows


#: The fractions of the screen's best rate a strict confirmation tries, in order, until one passes: a screen's
#: p99 of ~100 queries reads low on a machine with slow spells (measured here: resnet50 onnxruntime-int8-static
#: screened 90 ms at 28 QPS, then 144 ms in the strict test at 28 QPS and 138 ms at 22 QPS).
CONFIRM_STEPS = (1.0, 0.7, 0.5)


def lowest_testable_qps(settings: ServeSettings) -> float:
    """The lowest Server rate whose minimum query count LoadGen can issue within one test's time cap
    (``extras["max_test_s"]``, 60 s unless told), with 10% slack for Poisson arrivals (two standard deviations
    of the count at these sizes): 459 p99 queries in a minute is 8.4 QPS. Lower rates are not tested; the peak
    row then says so, with the cap that would let them be (``--param max_test_s``)."""
    return 1.1 * min_query_count(settings) / max_test_s(settings)


def max_test_s(settings: ServeSettings) -> float:
    """The time cap (s) on one LoadGen test (LoadGen stops issuing there even when its minimum counts are not met)."""
    return float(settings.extras.get("max_test_s", 60))


__all__ = ["ScenarioRunner", "VERDICT_LATENCY", "VERDICT_STRICT", "lowest_testable_qps", "max_test_s",
           "min_query_count", "test_settings"]
