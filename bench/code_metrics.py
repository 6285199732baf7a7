"""Size and layering metrics of the ``edgekit/`` package (issue 16's before/after numbers).

Counts modules, the largest module and the longest function (lines, decorators included), the
functions over 100 lines and modules over 700, and the imports written inside function bodies
(split into the lazy heavy dependencies and edgekit's own). Pure ``ast``: nothing is imported.

    python bench/code_metrics.py [--root edgekit] [--json PATH|-]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

HEAVY = ("torch", "tensorrt", "pycuda", "matplotlib", "ray", "optuna", "onnxscript", "PIL", "sklearn",
         "onnxruntime", "cuda", "numpy", "onnx", "onnx_ir", "scipy", "pexpect", "tomllib", "tomli")


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            yield node, node.end_lineno - start + 1


def _inner_imports(tree: ast.AST):
    seen = set()
    for fn, _ in _functions(tree):
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in seen:
                seen.add(id(node))
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    names = ["." * node.level + (node.module or "")]
                yield node, names


def measure(root: Path) -> dict:
    modules = sorted(p for p in root.rglob("*.py"))
    sizes, funcs, inner_own, inner_heavy, no_doc = {}, [], 0, 0, []
    for p in modules:
        text = p.read_text()
        rel = str(p.relative_to(root.parent))
        sizes[rel] = len(text.splitlines())
        tree = ast.parse(text)
        if not ast.get_docstring(tree) and text.strip():
            no_doc.append(rel)
        for fn, n in _functions(tree):
            funcs.append((n, f"{rel}:{fn.name}"))
        for _node, names in _inner_imports(tree):
            own = any(n.startswith(".") or n.split(".")[0] == "edgekit" for n in names)
            if own:
                inner_own += 1
            else:
                inner_heavy += 1
    funcs.sort(reverse=True)
    big_mod = max(sizes.items(), key=lambda kv: kv[1])
    return {
        "modules": len(modules),
        "lines": sum(sizes.values()),
        "largest_module": {"path": big_mod[0], "lines": big_mod[1]},
        "modules_over_700": sorted(k for k, v in sizes.items() if v > 700),
        "longest_function": {"name": funcs[0][1], "lines": funcs[0][0]},
        "functions_over_100": [f"{name} ({n})" for n, name in funcs if n > 100],
        "functions_over_80": sum(1 for n, _ in funcs if n > 80),
        "in_function_imports": inner_own + inner_heavy,
        "in_function_imports_edgekit": inner_own,
        "in_function_imports_third_party": inner_heavy,
        "modules_without_docstring": no_doc,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent / "edgekit"))
    ap.add_argument("--json", default=None, help="write the metrics as JSON to PATH ('-' for stdout)")
    args = ap.parse_args(argv)
    m = measure(Path(args.root))
    if args.json == "-":
        json.dump(m, sys.stdout, indent=2)
        print()
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2) + "\n")
    for k, v in m.items():
        if isinstance(v, list) and len(v) > 8:
            v = f"{len(v)}: " + ", ".join(map(str, v[:8])) + ", ..."
        print(f"{k:32s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
