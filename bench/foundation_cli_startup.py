"""`edgekit --help` start-up time vs a bare `python -c pass`, measured side by side (goal: < 0.5 s)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _time(argv, runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> dict:
    exe = str(Path(sys.executable).with_name("edgekit"))
    bare = _time([sys.executable, "-c", "pass"])
    helps = _time([exe, "--help"])
    heavy = subprocess.run([sys.executable, "-c", "import sys, edgekit.cli.main; print(sorted(m for m in "
                            "('torch','tensorrt','pycuda','onnxruntime','onnx','matplotlib') if m in sys.modules))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    res = {"edgekit_help_s": round(helps, 3), "python_startup_s": round(bare, 3),
           "ratio_to_bare_python": round(helps / bare, 2), "goal_s": 0.5, "meets_goal": helps < 0.5,
           "heavy_modules_imported_by_cli": heavy}
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
