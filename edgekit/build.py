"""Deprecated alias of :mod:`edgekit.engine` (the engine builders were ``edgekit/build/``).

Packaging tools skip folders named ``build``, so the package moved to ``edgekit/engine`` and its
TensorRT helpers to ``edgekit/trt``. Importing ``edgekit.build`` or ``edgekit.build.<sub>`` still
works and warns: each old submodule name is bound in ``sys.modules`` to the module object that
replaced it, so ``edgekit.build.plan is edgekit.engine.plan``.
"""

import sys
import warnings

from edgekit.engine import *  # noqa: F401,F403  (the old package's names)
from edgekit.engine import __all__  # noqa: F401
from edgekit.engine import calibration, engine, plan, python_api
from edgekit.trt import manifest, trtexec, versions

warnings.warn("edgekit.build is deprecated: import edgekit.engine (builders) or edgekit.trt (TensorRT helpers)",
              DeprecationWarning, stacklevel=2)

# old submodule -> the module that holds its code now
MOVED = {"calibration": calibration, "engine": engine, "plan": plan, "python_api": python_api,
         "manifest": manifest, "trtexec": trtexec, "versions": versions}

for _name, _module in MOVED.items():
    sys.modules[f"{__name__}.{_name}"] = _module
del _name, _module
