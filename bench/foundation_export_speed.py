"""Export time of the built-in ResNet-50 (goal: < 15 s here), each exporter, including checker,
shape inference and the parity check against PyTorch."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path


def main() -> dict:
    from edgekit.exporting import export

    tmp = Path(tempfile.mkdtemp())
    res = {}
    for exporter in ("dynamo", "torchscript"):
        t0 = time.perf_counter()
        rep = export("resnet50", tmp / f"r50_{exporter}.onnx", exporter=exporter)
        res[exporter] = {"seconds": round(time.perf_counter() - t0, 2), "opset": rep.opset,
                         "max_abs_error": rep.max_abs_error}
    res["goal_s"] = 15
    res["meets_goal"] = res["dynamo"]["seconds"] < 15
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
