"""`make demo`'s first step: a real small model and real data for `edgekit optimize`.

Trains (or loads from the on-disk cache, see edgekit.models.digits) a CIFAR-style ResNet on the
handwritten digits scikit-learn ships, exports it to ONNX, and writes its held-out test split
(labelled, for `edgekit eval`), a labelled selection set from the training split (for `optimize
--data`) and training samples (for `--calib`) as .npz files.

    python examples/optimize_digits_prepare.py OUT_DIR [--arch resnet|vgg|mobilenetv2|vit]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--arch", default="resnet", choices=["resnet", "vgg", "mobilenetv2", "vit"])
    args = ap.parse_args()
    import torch

    from edgekit.models import digits

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, acc = digits.trained(args.arch)
    xtr, ytr, xte, yte = digits.load()
    onnx_path = digits.export_onnx(model, args.out / f"digits-{args.arch}.onnx")
    np.savez(args.out / "digits-test.npz", x=xte, y=yte)
    # what `optimize --data` selects on: labelled images from the training split, so the test split
    # stays unseen until the final `edgekit eval`
    np.savez(args.out / "digits-select.npz", x=xtr[-300:], y=ytr[-300:])
    # named after the model input, the form `edgekit quantize --calib` reads too
    np.savez(args.out / "digits-calib.npz", images=xtr[:256], y=ytr[:256])
    print(f"digits {args.arch}: trained or loaded from the cache in {time.perf_counter() - t0:.1f} s, "
          f"test top-1 {100 * acc:.2f}% (torch) on {len(yte)} held-out images")
    print(f"wrote {onnx_path}, {args.out / 'digits-test.npz'} (labelled test split), "
          f"{args.out / 'digits-select.npz'} (labelled, for optimize's selection) and "
          f"{args.out / 'digits-calib.npz'} (calibration samples), both from the training split")


if __name__ == "__main__":
    main()
