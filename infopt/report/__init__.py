"""Reporting: gathering runs, the headline, charts and HTML export.

The gathering functions are re-exported here (``from infopt import report; report.gather(folder)``), the
facade the report notebook reads; each lives in :mod:`infopt.report.gathering`.
"""

from infopt.report.gathering import (ENV_FIELDS, PLACEMENT_COLUMNS, QUICK_MARK, ReportScope, environments, gather,
                                     notebook_status, placements, recommendations, runs, with_targets)

__all__ = ["ENV_FIELDS", "PLACEMENT_COLUMNS", "QUICK_MARK", "ReportScope", "environments", "gather", "notebook_status", "placements", "recommendations", "runs",
           "with_targets"]
