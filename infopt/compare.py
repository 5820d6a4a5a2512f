"""``python -m infopt.compare BASE_RUN NEW_RUN``: did it get slower? One table, and an exit code a CI can gate on.

Exit codes: 0 no gate tripped (or no ``--fail-above``); 1 a row is ``slower`` (significant, beyond the drift
band) by more than ``--fail-above`` percent both raw and drift-normalised; 2 bad input (one sentence on
stderr). The statistics are :mod:`infopt.report.compare`'s.
"""

from __future__ import annotations

import argparse
import json
import sys

from infopt.errors import InfoptError, InvalidInputError
from infopt.report.compare import compare_runs, display_table, summary_lines

PROG = "python -m infopt.compare"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Compare two runs of run_notebooks.py: per target, "
                                     "model, batch size and variant, the ratio of medians with a 95% interval, "
                                     "normalised by the machine's drift, and a verdict.")
    parser.add_argument("base", help="the baseline run folder (results/<run>)")
    parser.add_argument("new", help="the new run folder")
    parser.add_argument("--fail-above", type=float, default=None, metavar="PCT",
                        help="exit 1 when a significant slowdown exceeds PCT percent, raw and drift-normalised")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    return parser


def markdown(comparison) -> str:
    table = display_table(comparison)
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False))
    notes = "".join(f"- {line}\n" for line in summary_lines(comparison))
    return f"### Run comparison\n\n{notes}\n{header}{body}"


def render(comparison, fmt: str, gate: float | None) -> str:
    if fmt == "json":
        document = comparison.as_dict()
        if gate is not None:
            document["fail_above_pct"] = gate
            document["regressions"] = int(len(comparison.regressions(gate)))
        return json.dumps(document, indent=1, default=str)
    if fmt == "markdown":
        return markdown(comparison)
    table = display_table(comparison)
    lines = summary_lines(comparison)
    return "\n".join(lines[:1] + [table.to_string(index=False) if len(table) else "(no rows in common)"] + lines[1:])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        if args.fail_above is not None and not args.fail_above >= 0:
            raise InvalidInputError(f"--fail-above must be a percentage of at least 0, got {args.fail_above:g}.")
        comparison = compare_runs(args.base, args.new)
    except InfoptError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(render(comparison, args.format, args.fail_above))
    if args.fail_above is None:
        return 0
    regressions = comparison.regressions(args.fail_above)
    if len(regressions):
        if args.format == "text":
            print(f"FAIL: {len(regressions)} row(s) slower by more than {args.fail_above:g}% (raw and after drift "
                  f"normalisation).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
