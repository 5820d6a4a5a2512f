"""Serving under a latency bound with MLPerf LoadGen: a dynamic batcher, LoadGen's scenarios, the batcher grid
and the consistency checks (docs/serving.md). A facade for callers; the package's modules import each other
directly."""

from infopt.serve.batcher import DynamicBatcher, check_batcher_limits
from infopt.serve.checks import consistency_checks
from infopt.serve.grid import batcher_grid, best_settings, serve_model
from infopt.serve.queueing import md1_peak_rate
from infopt.serve.settings import SCENARIOS, ServeSettings, check_serving_parameter, default_bound_ms

__all__ = ["DynamicBatcher", "SCENARIOS", "ServeSettings", "batcher_grid", "best_settings", "check_batcher_limits",
           "check_serving_parameter", "consistency_checks", "default_bound_ms", "md1_peak_rate", "serve_model"]
