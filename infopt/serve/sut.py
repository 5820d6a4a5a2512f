"""The system under test and the query sample library for LoadGen, and one LoadGen test run into a log folder.

The sample library holds seeded inputs (one sample each, built once); a query's sample index picks one. The
system under test hands every query sample to the :class:`~infopt.serve.batcher.DynamicBatcher` and answers
LoadGen when its batch ends (for causal LMs also when the first token is out, for LoadGen's token latencies).
"""

from __future__ import annotations

import shutil
import threading
import time
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


def batch_buckets(max_batch: int) -> list[int]:
    """The batch sizes a static-shape (compiled) model runs behind a batcher of ``max_batch``: the powers of two
    below it and ``max_batch`` itself. A compiled variant builds one graph per batch size (``dynamic=False``), so
    serving every size from 1 to 16 would compile 16 graphs, each while a request waits."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


def model_batch_runner(model, library: SampleLibrary, buckets: Sequence[int] | None = None
                       ) -> Callable[[list[QueryPayload]], list]:
    """A batch function for the batcher: one forward over the batch's samples, finished on the device.

    ``buckets``: pad each batch (repeating its last sample) to the smallest of these sizes that holds it, so a
    static-shape model only ever sees those sizes (the padding's work is part of the measured latency, as in a
    real server that pads)."""

    def run(payloads: list[QueryPayload]) -> list:
        indices = [p.index for p in payloads]
        if buckets:
            size = min((b for b in buckets if b >= len(indices)), default=len(indices))
            indices += [indices[-1]] * (size - len(indices))
        with torch.inference_mode():
            model(library.batch(indices))
        synchronize(model.device)
        return [None] * len(payloads)

    return run


def warm_up_sizes(run_batch: Callable[[list], list], sizes: Sequence[int]) -> float:
    """Run one batch of each size (twice: a compiled graph may specialise on the second call) before LoadGen's
    clock starts; returns the seconds it took (compilation included)."""
    started = time.perf_counter()
    for size in sizes:
        for _ in range(2):
            run_batch([QueryPayload(-1, 0)] * size)
    return time.perf_counter() - started


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
    """Run one LoadGen test with ``settings`` (an ``mlperf_loadgen.TestSettings``) against ``batcher``, which this
    thread serves (never :meth:`~DynamicBatcher.start` it); LoadGen's log files are written to ``log_dir``
    (replaced if it exists)."""
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
    failure: list[BaseException] = []

    def test() -> None:
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
        except BaseException as error:  # noqa: BLE001 - raised again in the calling thread
            failure.append(error)
        finally:
            batcher.stop_soon()

    try:  # LoadGen runs in a helper thread, the model in this one (DynamicBatcher.work_here says why)
        loadgen = threading.Thread(target=test, name="infopt-loadgen", daemon=True)
        loadgen.start()
        batcher.work_here()
        loadgen.join()
        if failure:
            raise failure[0]
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    completed = list(batcher.completed)
    return LoadGenRun(read_summary(log_dir), log_dir, [r.arrival for r in completed], [r.end for r in completed],
                      list(batcher.records), list(batcher.errors))


__all__ = ["LOADGEN_SCENARIO", "LoadGenRun", "QueryPayload", "SampleLibrary", "batch_buckets", "model_batch_runner",
           "run_loadgen", "warm_up_sizes"]
