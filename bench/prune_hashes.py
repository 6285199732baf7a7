"""Fingerprints of the pruner's output over the model corpus: a refactor must leave them unchanged.

Every corpus model (``edgekit.models.zoo.CORPUS``) is exported once, TorchScript exporter, and
cached under ``--cache`` (the inputs are hashed as well, so a changed export shows as a changed
input, not as a pruner change). Each is then pruned with a fixed set of settings that walk the
pruner's paths: per-group ratio (l1), a FLOPs target with channel rounding (l2, global scope), a
parameters target, and the data-free ``obspa`` / ``obspa-seq`` criteria on BatchNorm-keeping
exports. For each run the SHA-256 of the serialised pruned model and the prunable share are
recorded, with the prune time.

    python bench/prune_hashes.py --write bench/prune_hashes.ref.json     # before a change
    python bench/prune_hashes.py --check bench/prune_hashes.ref.json     # after: exits 1 on a diff

The reference is machine-specific only through the installed onnx / torch versions (the export);
the check compares the input hashes first and says so when they differ. The output does not
depend on ``PYTHONHASHSEED`` (tests/prune/test_reproducible.py checks that), so the script runs
under whatever seed the process has.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

# (label, export keeps BN, prune kwargs)
SETTINGS = [
    ("ratio0.5-l1", False, dict(ratio=0.5)),
    ("flops0.5-l2-global-r8", False, dict(flops_target=0.5, criterion="l2", scope="global", round_to=8)),
    ("params0.6-l1", False, dict(params_target=0.6)),
    ("flops0.67-obspa", True, dict(flops_target=0.67, criterion="obspa")),
    ("flops0.67-obspa-seq", True, dict(flops_target=0.67, criterion="obspa-seq")),
]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _export(name: str, keep_bn: bool, cache: Path) -> bytes:
    path = cache / f"{name}{'.bn' if keep_bn else ''}.onnx"
    if not path.is_file():
        from edgekit.models.zoo import to_onnx

        model = to_onnx(name, keep_bn=keep_bn)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(model.SerializeToString())
        tmp.replace(path)
    return path.read_bytes()


def run(models, cache: Path) -> dict:
    import onnx

    from edgekit.prune import analyze, prune

    out: dict = {}
    for name in models:
        row: dict = {}
        for label, keep_bn, kwargs in SETTINGS:
            data = _export(name, keep_bn, cache)
            model = onnx.load_from_string(data)
            entry: dict = {"input": _sha(data)[:16]}
            try:
                dg = analyze(model)
                total = sum(g.size for g in dg.groups) + sum(getattr(g, "size", 0) for g in dg.skipped)
                entry["prunable"] = round(sum(g.size for g in dg.groups) / total, 6) if total else 0.0
                t = time.perf_counter()
                pruned, report = prune(model, **kwargs)
                entry["seconds"] = round(time.perf_counter() - t, 3)
                entry["output"] = _sha(pruned.SerializeToString())
                entry["flops_ratio"] = round(report.flops_ratio, 6)
            except Exception as exc:  # noqa: BLE001 - an error is a fingerprint too
                entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            row[label] = entry
        out[name] = row
        done = sum(1 for e in row.values() if "output" in e)
        print(f"{name:22s} {done}/{len(SETTINGS)} pruned", file=sys.stderr, flush=True)
    return out


def compare(ref: dict, now: dict) -> list:
    diffs = []
    for name, row in ref.items():
        for label, want in row.items():
            got = now.get(name, {}).get(label)
            if got is None:
                continue
            if got.get("input") != want.get("input"):
                diffs.append(f"{name} {label}: the exported input differs (onnx/torch changed?), not comparable")
                continue
            for key in ("output", "prunable", "flops_ratio", "error"):
                if got.get(key) != want.get(key):
                    diffs.append(f"{name} {label}: {key} {want.get(key)} -> {got.get(key)}")
    return diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="corpus names (default: all)")
    ap.add_argument("--cache", default="build/prune_hashes", help="where the exports are kept")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", help="write the fingerprints to this JSON file")
    g.add_argument("--check", help="compare with this JSON file; exit 1 on any difference")
    args = ap.parse_args(argv)
    from edgekit.models.zoo import CORPUS

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    now = run(args.models or sorted(CORPUS), cache)
    total = sum(e.get("seconds", 0.0) for row in now.values() for e in row.values())
    print(f"pruned {sum(len(r) for r in now.values())} runs in {time.perf_counter() - t:.1f} s "
          f"(prune time {total:.1f} s)", file=sys.stderr)
    if args.write:
        Path(args.write).write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        return 0
    ref = json.loads(Path(args.check).read_text())
    diffs = compare(ref, now)
    ref_total = sum(e.get("seconds", 0.0) for row in ref.values() for e in row.values())
    print(json.dumps({"differences": diffs, "prune_seconds_before": round(ref_total, 2),
                      "prune_seconds_after": round(total, 2)}, indent=1))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
