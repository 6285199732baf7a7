"""Run every benchmark in bench/ one after the other (quiet machine assumed) and collect their JSON.

Results go to OUT/bench-results.json; OUT defaults to build/ at the repository root (beside bench/),
whatever the current folder. Each benchmark runs with its own defaults, as before.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "build"


def scripts() -> List[Path]:
    """The benchmark scripts run_all runs, in order."""
    return [s for s in sorted(HERE.glob("*.py")) if s.name != Path(__file__).name]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"folder for bench-results.json (default: {DEFAULT_OUT})")
    ap.add_argument("--list", action="store_true", help="print the benchmarks that would run and exit")
    return ap.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.list:
        for script in scripts():
            print(script.name)
        return 0
    out = args.out / "bench-results.json"
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out} is not a folder", file=sys.stderr)
        return 2
    results = {}
    for script in scripts():
        print(f"== {script.name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        results[script.name] = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                                "stdout_tail": proc.stdout[-4000:], "stderr_tail": proc.stderr[-1500:]}
        print(proc.stdout[-4000:], flush=True)
        if proc.returncode:
            print(proc.stderr[-1500:], flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
