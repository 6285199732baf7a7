"""Run every benchmark in bench/ one after the other (quiet machine assumed) and collect their JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    here = Path(__file__).resolve().parent
    results = {}
    for script in sorted(here.glob("*.py")):
        if script.name == "run_all.py":
            continue
        print(f"== {script.name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        results[script.name] = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                                "stdout_tail": proc.stdout[-4000:], "stderr_tail": proc.stderr[-1500:]}
        print(proc.stdout[-4000:], flush=True)
        if proc.returncode:
            print(proc.stderr[-1500:], flush=True)
    out = Path("build") / "bench-results.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
