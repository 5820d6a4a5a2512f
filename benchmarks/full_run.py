"""How long the default full run takes, and how big it is (issue #23).

Runs ``python run_notebooks.py --device cpu`` (three models, the full-cpu preset: racing search, compiled paths
included) into a temporary output folder and prints the wall time, the run's size in MB, each notebook's
duration (from ``run.json``) and the machine's CPU model. Refuses to start, in one line (exit 2), when other
processes are using the machine (:func:`infopt.measure.interference.check_machine`): a figure measured on a
busy machine is not the machine's. The Inductor cache goes to the temporary folder too, so compilation is
measured cold unless ``--keep-cache DIR`` names a cache to reuse. Target: at most 12 minutes on a 2-core CPU.

    python benchmarks/full_run.py                # the default CPU run (run it alone)
    python benchmarks/full_run.py --quick        # the --quick run instead (target: at most 90 s)
    python benchmarks/full_run.py --quick --models resnet50   # the smallest run: proves the script works
    python benchmarks/full_run.py --keep /tmp/runs   # keep the run folder (serving rows, checks) for the note
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from infopt.env import cpu_model  # noqa: E402
from infopt.measure.interference import check_machine  # noqa: E402


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time the --quick run instead of the default one")
    parser.add_argument("--models", nargs="+", help="models to run (default: the runner's three)")
    parser.add_argument("--keep-cache", help="an Inductor cache folder to reuse (default: a cold, temporary one)")
    parser.add_argument("--keep", type=Path, help="copy the run folder here when it ends (default: only the figures "
                                                  "printed here survive)")
    args = parser.parse_args(argv)
    machine = check_machine(3.0)
    if machine.busy:
        print(f"Refusing to start: {machine.line}")
        return 2
    with tempfile.TemporaryDirectory(prefix="infopt-full-run-") as tmp:
        out = Path(tmp) / "results"
        command = [sys.executable, str(REPO / "run_notebooks.py"), "--device", "cpu", "--output", str(out),
                   "--run-name", "timed"] + (["--quick"] if args.quick else []) + \
            (["--models", *args.models] if args.models else [])
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=args.keep_cache or str(Path(tmp) / "inductor-cache"))
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, env=env)
        wall_s = time.perf_counter() - started
        run_dir = out / "timed"
        manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8")) if \
            (run_dir / "run.json").exists() else {}
        print(f"\nrun: {' '.join(command[1:])}")
        print(f"exit status {result.returncode}; wall time {wall_s:.0f} s ({wall_s / 60:.1f} min); "
              f"run size {folder_mb(run_dir) if run_dir.exists() else 0:.1f} MB "
              f"(Inductor cache not counted: {folder_mb(Path(env['TORCHINDUCTOR_CACHE_DIR'])):.1f} MB)")
        for entry in manifest.get("notebooks") or []:
            duration = entry.get("duration_s")
            print(f"  {entry.get('model') or '-':12} {entry.get('notebook'):10} {entry.get('status'):10} "
                  f"{duration if duration is None else round(duration)} s")
        print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs")
        if args.keep and run_dir.exists():
            shutil.copytree(run_dir, args.keep / run_dir.name, dirs_exist_ok=False)
            print(f"run folder kept in {args.keep / run_dir.name}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
