"""Fixtures for the optimize tests: a digits ResNet trained on real data (cached on disk by
edgekit.models.digits), exported to ONNX, with its test split as labelled data and training samples
as calibration data."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory) -> Dict[str, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from edgekit.models import digits

    d = tmp_path_factory.mktemp("digits")
    model, _ = digits.trained("resnet")
    digits.export_onnx(model, d / "resnet.onnx")
    xtr, ytr, xte, yte = digits.load()
    np.savez(d / "test.npz", x=xte, y=yte)
    np.savez(d / "calib.npz", x=xtr[:128], y=ytr[:128])
    np.savez(d / "unlabelled.npz", x=xte[:64])
    return {"model": d / "resnet.onnx", "test": d / "test.npz", "calib": d / "calib.npz",
            "unlabelled": d / "unlabelled.npz", "dir": d}
