"""What ``edgekit optimize`` leaves in OUT/: the chosen model, ``recipe.json`` (replayable),
``report.json`` (every candidate's measurements) and ``pareto.png``; each written atomically, so an
interrupted run leaves the journal and no half-written file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from edgekit.errors import DependencyMissingError
from edgekit.graph.io import atomic_output, save_model
from edgekit.optimize import recipe as rcp
from edgekit.optimize.plot import pareto_plot

MODEL = "model.onnx"
RECIPE = "recipe.json"
REPORT = "report.json"
PLOT = "pareto.png"


def write_json(dest: Path, doc: dict) -> None:
    with atomic_output(dest) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def write(result, out_dir, source_model: str, calib_source: str, plot: bool = True) -> Dict[str, str]:
    """Write the pick and the reports of ``result`` into ``out_dir``; returns name -> path written."""
    out_dir = Path(out_dir)
    files: Dict[str, str] = {}
    notes: List[str] = []
    if result.model is not None:
        save_model(result.model, out_dir / MODEL)
        files["model"] = str(out_dir / MODEL)
    if result.pick is not None:
        doc = rcp.to_json(result.pick.recipe, {
            "source_model": source_model, "device": result.device, "calibration": calib_source,
            "budget_ms": result.budget_ms, "status": result.status,
            "expected": {"latency_ms": result.pick.latency.median_ms, "latency_kind": result.latency_kind,
                         result.metric: result.pick.accuracy}})
        write_json(out_dir / RECIPE, doc)
        files["recipe"] = str(out_dir / RECIPE)
    if plot:
        try:
            pareto_plot(result, out_dir / PLOT)
            files["plot"] = str(out_dir / PLOT)
        except DependencyMissingError as exc:  # matplotlib missing: the rest of the output still stands
            notes.append(f"no Pareto plot: {exc}")
    report = dict(result.to_dict(), files=dict(files, report=str(out_dir / REPORT)), notes=notes)
    write_json(out_dir / REPORT, report)
    files["report"] = str(out_dir / REPORT)
    return files
