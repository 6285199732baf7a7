"""The package's shape rules (issue 16), checked on every test run: small modules and functions, a
docstring on every module, and imports inside functions only where they keep a heavy dependency lazy.

The layering itself is import-linter's job (``lint-imports``, run by ``make test``); these rules are
what it does not see.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "edgekit"
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 100
# third-party packages imported inside functions on purpose: heavy or optional
LAZY_OK = {"torch", "tensorrt", "pycuda", "matplotlib", "ray", "onnxruntime", "sklearn", "optuna", "onnxscript",
           "PIL", "cuda", "pexpect", "scipy", "tomllib", "tomli", "onnx_ir", "psutil", "typer", "rich", "resource"}


def _metrics():
    spec = importlib.util.spec_from_file_location("code_metrics", ROOT / "bench" / "code_metrics.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _modules():
    return sorted(PKG.rglob("*.py"))


def test_no_module_over_the_limit():
    big = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_no_function_over_the_limit():
    m = _metrics()
    long = []
    for p in _modules():
        for fn, n in m._functions(ast.parse(p.read_text())):
            if n > MAX_FUNCTION_LINES:
                long.append(f"{p.relative_to(ROOT)}:{fn.name} ({n})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_every_module_opens_with_a_docstring():
    missing = [str(p.relative_to(ROOT)) for p in _modules()
               if p.read_text().strip() and not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"


def test_imports_inside_functions_only_keep_heavy_dependencies_lazy():
    """Outside the CLI (which imports the library inside commands so that --help stays instant), an
    import inside a function is a heavy / optional third-party package, or an edgekit module marked
    ``# lazy`` on its line (one that pulls torch in, say). Anything else hid an import cycle."""
    m = _metrics()
    bad = []
    for p in _modules():
        rel = p.relative_to(ROOT)
        if rel.parts[1] == "cli":
            continue
        lines = p.read_text().splitlines()
        for node, names in m._inner_imports(ast.parse(p.read_text())):
            tops = {n.lstrip(".").split(".")[0] for n in names}
            if tops <= LAZY_OK and not any(n.startswith(".") for n in names):
                continue
            text = " ".join(lines[node.lineno - 1:node.end_lineno])
            if "lazy" in text:
                continue
            bad.append(f"{rel}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bad, "imports inside functions that are neither lazy heavy dependencies nor marked '# lazy':\n" + \
        "\n".join(bad)


@pytest.mark.parametrize("path", ["build"])
def test_no_package_folder_named_like_build_output(path):
    """Packaging and code-structure tools skip folders called build/: no package of edgekit is one."""
    assert not (PKG / path).is_dir()
