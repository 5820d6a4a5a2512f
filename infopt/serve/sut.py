"""The system under test and the query sample library for LoadGen, and one LoadGen test run into a log folder.

The sample library holds seeded inputs (one sample each, built once); a query's sample index picks one. The
system under test hands every query sample to the :class:`~infopt.serve.batcher.DynamicBatcher` and answers
LoadGen when its batch ends (for causal LMs also when the first token is out, for LoadGen's token latencies).
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from infopt.devices import synchronize
from infopt.serve.batcher import DynamicBatcher
from infopt.serve.loadgen_log import read_summary

#: LoadGen's scenario names for ours ("server-tokens" is the Server scenario with token latencies).
LOADGEN_SCENARIO = {"single-stream": "SingleStream", "server": "Server", "offline": "Offline",
                    "server-tokens": "Server"}


@dataclass
class QueryPayload:
    """What the batcher carries for one LoadGen query sample."""

    query_id: int
    index: int
    first_token: Callable[[], None] | None = None


class SampleLibrary:
    """Seeded one-sample inputs (``model.prepare_input(1, seq_len, seed=seed + i)``), built once."""

    def __init__(self, model, count: int, seq_len: int | None = None, seed: int = 0):
        self.model, self.count = model, int(count)
        self.samples = [model.prepare_input(1, seq_len, seed=seed + i) for i in range(self.count)]

    def batch(self, indices: Sequence[int]) -> dict:
        """The samples ``indices`` stacked along the batch dimension."""
        picked = [self.samples[i] for i in indices]
        return {key: torch.cat([s[key] for s in picked], dim=0) for key in picked[0]}


def model_batch_runner(model, library: SampleLibrary) -> Callable[[list[QueryPayload]], list]:
    """A batch function for the batcher: one forward over the batch's samples, finished on the device."""

    def run(payloads: list[QueryPayload]) -> list:
        with torch.inference_mode():
            model(library.batch([p.index for p in payloads]))
        synchronize(model.device)
        return [None] * len(payloads)

    return run


@dataclass
class LoadGenRun:
    """One LoadGen test: its parsed summary, its log folder and every request's arrival and completion."""

    summary: dict
    log_dir: Path
    arrivals: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    batches: list = field(default_factory=list)
    errors: list = field(default_factory=list)


def run_loadgen(settings, batcher: DynamicBatcher, library_size: int, log_dir: str | Path, *,
                token_latencies: bool = False) -> LoadGenRun:
    """Run one LoadGen test with ``settings`` (an ``mlperf_loadgen.TestSettings``) against ``batcher``; LoadGen's
    log files are written to ``log_dir`` (replaced if it exists)."""
    import mlperf_loadgen as lg

    log_dir = Path(log_dir)
    if log_dir.exists():
        shutil.rmtree(log_dir)
    log_dir.mkdir(parents=True)
    lock = threading.Lock()

    def respond(request, output) -> None:
        payload = request.payload
        tokens = output if isinstance(output, int) and not isinstance(output, bool) else 1  # generated tokens
        with lock:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(payload.query_id, 0, 0, tokens)] if token_latencies
                                    else [lg.QuerySampleResponse(payload.query_id, 0, 0)])

    def first_token(query_id: int) -> Callable[[], None]:
        return lambda: lg.FirstTokenComplete([lg.QuerySampleResponse(query_id, 0, 0)])

    def issue(query_samples) -> None:
        for sample in query_samples:
            payload = QueryPayload(sample.id, sample.index, first_token(sample.id) if token_latencies else None)
            batcher.submit(payload, respond)

    batcher.reset_records()
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(library_size, library_size, lambda indices: None, lambda indices: None)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(log_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False
    try:
        batcher.start()
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    completed = list(batcher.completed)
    return LoadGenRun(read_summary(log_dir), log_dir, [r.arrival for r in completed], [r.end for r in completed],
                      list(batcher.records), list(batcher.errors))


__all__ = ["LOADGEN_SCENARIO", "LoadGenRun", "QueryPayload", "SampleLibrary", "model_batch_runner", "run_loadgen"]
