"""False alarms and real regressions of the run-vs-run and A/B verdicts (issue #25). Run it ALONE on a quiet machine.

1. False alarms: the same code and settings run twice (``--quick``), compared with ``python -m infopt.compare``;
   prints the share of rows that are "no significant difference" or "within machine drift" (target: >= 95%).
2. Real regression, run vs run: ``examples/knob_model.py`` run once as is and once with ``KNOB_EXTRA_WORK=0.2``
   (20% more layers, same spec); the rows must be "slower", ``--fail-above 10`` must exit 1, and the
   unchanged pair must exit 0.
3. Real regression, A/B: ``run_notebooks.py --ab KNOB KNOB?extra_work=0.2``; the verdict must be "slower"
   with an interval covering 1.2.

Steps 2 and 3 use the full timing at batch sizes 1, 8 and 32 (the knob model is small, so that stays quick).
Every run pins ``--threads`` (default 1, the setting docs/regressions.md gives for gates on a shared VM; ``--threads
0`` leaves torch's default of one per core, to see what the default gives).

    python benchmarks/false_alarms.py --output /tmp/false-alarms            # about 15-25 min on a 2-core CPU
    python benchmarks/false_alarms.py --output /tmp/fa --models resnet50 --pairs 1   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KNOB = "py:knob_model:make_model?layers=10"
OK = ("no significant difference", "within machine drift")


def runner(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "examples"),
                                                                os.environ.get("PYTHONPATH", "")]), **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "run_notebooks.py"), *args], env=environment, text=True,
                          capture_output=True)


def compare(base: Path, new: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infopt.compare", str(base), str(new), *extra], text=True,
                          capture_output=True, cwd=str(REPO))


def must(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if proc.returncode not in (0, 1) or (what.startswith("run") and proc.returncode):
        sys.exit(f"{what} failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["resnet50", "distilbert", "gpt2"])
    parser.add_argument("--notebooks", nargs="+", default=["benchmark", "optimize"])
    parser.add_argument("--pairs", type=int, default=2, help="same-code pairs for the false-alarm rate")
    parser.add_argument("--threads", type=int, default=1, help="--threads of every run (0: torch's default)")
    args = parser.parse_args()
    out = args.output.resolve()
    threads = ["--threads", str(args.threads)] if args.threads else []
    common = ["--device", "cpu", "--quick", "--no-html", "--output", str(out), *threads]

    ok = total = 0
    for pair in range(args.pairs):
        names = [f"same-{pair}-a", f"same-{pair}-b"]
        for name in names:
            must(runner(*common, "--models", *args.models, "--notebooks", *args.notebooks, "--run-name", name),
                 f"run {name}")
        proc = must(compare(out / names[0], out / names[1], "--format", "json"), "compare")
        rows = json.loads(proc.stdout)["rows"]
        ok += sum(row["verdict"] in OK for row in rows)
        total += len(rows)
        print(compare(out / names[0], out / names[1]).stdout)
    print(f"FALSE ALARMS: {ok}/{total} rows ({100 * ok / max(total, 1):.1f}%) are 'no significant difference' or "
          f"'within machine drift' over {args.pairs} same-code pair(s), threads {args.threads or 'default'} "
          f"(target >= 95%)")

    # the knob model is small (0.15 ms a call): its runs use the full timing (rows of about a second, not a
    # quick run's tens of milliseconds, which one 0.1-0.3 s slow spell of a shared VM covers whole)
    full = ["--device", "cpu", "--no-html", "--output", str(out), "--batch-sizes", "1", "8", "32", *threads]
    knob = [*full, "--models", KNOB, "--notebooks", "benchmark"]
    must(runner(*knob, "--run-name", "knob-base"), "run knob-base")
    must(runner(*knob, "--run-name", "knob-same"), "run knob-same")
    must(runner(*knob, "--run-name", "knob-plus20", env={"KNOB_EXTRA_WORK": "0.2"}), "run knob-plus20")
    regression = compare(out / "knob-base", out / "knob-plus20", "--fail-above", "10")
    unchanged = compare(out / "knob-base", out / "knob-same", "--fail-above", "10")
    print(regression.stdout)
    print(f"RUN VS RUN: +20% knob --fail-above 10 exit {regression.returncode} (want 1); unchanged pair exit "
          f"{unchanged.returncode} (want 0)")

    ab = must(runner("--ab", KNOB, KNOB + "&extra_work=0.2", *full, "--run-name", "ab-plus20"), "run ab-plus20")
    print(ab.stdout)
    rows = json.loads((out / "ab-plus20" / "run.json").read_text())["ab"]["rows"]
    for row in rows:
        covered = row["time_ratio_ci_low"] <= 1.2 <= row["time_ratio_ci_high"]
        print(f"A/B: bs={row['batch_size']} ratio {row['time_ratio']:.3f} [{row['time_ratio_ci_low']:.3f}, "
              f"{row['time_ratio_ci_high']:.3f}] {row['verdict']}; interval covers 1.2: {covered}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
