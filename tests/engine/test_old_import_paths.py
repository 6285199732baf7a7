"""The paths code moved away from still import, and give the very same objects.

``edgekit.build`` (now ``edgekit.engine`` and ``edgekit.trt``) warns; the re-exporting modules
``edgekit.bench.stats``, ``edgekit.bench.trtexec_log`` and ``edgekit.quantize.trtcache`` do not.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

import edgekit.engine
import edgekit.engine.calibration
import edgekit.engine.engine
import edgekit.engine.plan
import edgekit.engine.python_api
import edgekit.trt.calibration_cache
import edgekit.trt.manifest
import edgekit.trt.trtexec
import edgekit.trt.trtexec_log
import edgekit.trt.versions
from edgekit import stats

MOVED = {
    "edgekit.build.calibration": edgekit.engine.calibration,
    "edgekit.build.engine": edgekit.engine.engine,
    "edgekit.build.plan": edgekit.engine.plan,
    "edgekit.build.python_api": edgekit.engine.python_api,
    "edgekit.build.manifest": edgekit.trt.manifest,
    "edgekit.build.trtexec": edgekit.trt.trtexec,
    "edgekit.build.versions": edgekit.trt.versions,
}


def _fresh_build_import():
    for name in [n for n in sys.modules if n == "edgekit.build" or n.startswith("edgekit.build.")]:
        del sys.modules[name]
    return importlib.import_module("edgekit.build")


def test_edgekit_build_warns_and_reexports_the_engine():
    with pytest.warns(DeprecationWarning, match="edgekit.build is deprecated"):
        build = _fresh_build_import()
    for name in edgekit.engine.__all__:
        assert getattr(build, name) is getattr(edgekit.engine, name)
    assert build.__all__ == edgekit.engine.__all__


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_submodules_are_the_new_modules(old):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _fresh_build_import()
        module = importlib.import_module(old)
    assert module is MOVED[old]
    assert sys.modules[old] is MOVED[old]
    assert getattr(sys.modules["edgekit.build"], old.rsplit(".", 1)[1]) is MOVED[old]


def test_from_imports_through_the_alias():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from edgekit.build import plan_build, trtexec_command
        from edgekit.build.calibration import check_cache_version
        from edgekit.build.manifest import check_engine_compatible
        import edgekit.build.trtexec as tx
    assert plan_build is edgekit.engine.plan.plan_build
    assert trtexec_command is edgekit.trt.trtexec.trtexec_command
    assert check_cache_version is edgekit.trt.calibration_cache.check_cache_version
    assert check_engine_compatible is edgekit.trt.manifest.check_engine_compatible
    assert tx is edgekit.trt.trtexec


def test_a_submodule_first_in_a_fresh_interpreter():
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import edgekit.build.versions as old, edgekit.trt.versions as new\n"
            "assert old is new\n"
            "from edgekit.build.plan import plan_build\n"
            "import edgekit.engine.plan\n"
            "assert plan_build is edgekit.engine.plan.plan_build\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "DeprecationWarning: edgekit.build is deprecated" in proc.stderr


def test_reexporting_modules():
    from edgekit.bench import stats as old_stats
    from edgekit.bench import trtexec_log as old_log
    from edgekit.quantize import trtcache as old_cache

    for name in old_stats.__all__:
        assert getattr(old_stats, name) is getattr(stats, name)
    for name in old_log.__all__:
        assert getattr(old_log, name) is getattr(edgekit.trt.trtexec_log, name)
    for name in old_cache.__all__:
        assert getattr(old_cache, name) is getattr(edgekit.trt.calibration_cache, name)
    assert {"LatencyReport", "Summary"} <= set(old_stats.__all__)
    assert {"parse_log", "parse_export_times", "TrtexecLog"} <= set(old_log.__all__)
    assert {"read_cache", "write_cache", "make_cache", "CalibrationCache"} <= set(old_cache.__all__)
