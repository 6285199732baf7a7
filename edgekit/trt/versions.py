"""What changes between TensorRT generations, in one table.

Every fact here was read from NVIDIA/TensorRT's public sources (``include/NvInfer.h``,
``python/src/infer/pyCore.cpp``, ``samples/common/sampleOptions.cpp``) per release branch; the
code that depends on a fact asks this table instead of comparing version numbers inline, so a new
release is one new row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from edgekit.devices import parse_version
from edgekit.errors import InputError


@dataclass(frozen=True)
class Generation:
    """One TensorRT API generation and what it offers."""

    name: str
    since: Tuple[int, int]
    explicit_batch_flag: bool  # create_network needs 1 << EXPLICIT_BATCH (8.x); ignored in 10, gone in 11
    workspace_attr: bool  # config.max_workspace_size (gone in 10.0)
    memory_pools: bool  # config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, n) (8.4+)
    precision_flags: bool  # BuilderFlag.FP16 / INT8 (removed in 11: strongly typed)
    implicit_int8: bool  # IInt8EntropyCalibrator2 + config.int8_calibrator (removed in 11)
    execute_v3: bool  # set_tensor_address + execute_async_v3 (8.5+)
    execute_v2: bool  # bindings + execute_async_v2 (removed in 10)
    # trtexec flags
    trtexec_workspace: str  # "workspace" (--workspace=N) | "pool" (--memPoolSize=workspace:N) | "pool_suffix" (...:NM)
    trtexec_build_only: str  # --buildOnly (<= 8.5) or --skipInference (8.6+)
    trtexec_percentiles_list: bool  # --percentile=90,95,99 (8.5+) or one value
    cuda_graph_default: bool  # trtexec 11 captures a CUDA graph unless --noCudaGraph
    transfers_default: bool  # trtexec 11 leaves H2D/D2H out unless --includeDataTransfers
    strongly_typed_only: bool
    # Only TensorRT 7 differs in these (defaults: what every 8.0+ generation does)
    buildable: bool = True  # edgekit builds for it (7.x: no Q/DQ, no build_serialized_network)
    qdq_int8: bool = True  # the ONNX parser takes Q/DQ (explicit) INT8; 7.x knows implicit calibration only
    serialized_build: bool = True  # builder.build_serialized_network (8.0+); 7.x: build_engine + serialize
    trtexec_explicit_batch_flag: bool = False  # trtexec 7 needs --explicitBatch for an ONNX model
    trtexec_timing_cache: bool = True  # --timingCacheFile (8.0+)
    trtexec_sparsity: bool = True  # --sparsity=enable (8.0+)
    trtexec_transfers_flag: bool = True  # --noDataTransfers exists; trtexec 7 always includes H2D/D2H


GENERATIONS = (
    # TensorRT 7.0-7.2 (JetPack 4.4/4.5: 7.1.3). Facts from trtexec 7's samples/common/sampleOptions.cpp
    # (--explicitBatch "default = implicit", --workspace=N MiB, --buildOnly, --percentile=P one value,
    # --useCudaGraph off by default; no --timingCacheFile, --sparsity, --noDataTransfers) and the
    # onnx-tensorrt 7.x parser (Q/DQ INT8 arrived with 8.0; opset caps in MAX_ONNX_OPSET_7).
    Generation("7.x", (7, 0), True, True, False, True, True, False, True,
               "workspace", "--buildOnly", False, False, True, False,
               buildable=False, qdq_int8=False, serialized_build=False, trtexec_explicit_batch_flag=True,
               trtexec_timing_cache=False, trtexec_sparsity=False, trtexec_transfers_flag=False),
    Generation("8.0-8.3", (8, 0), True, True, False, True, True, False, True,
               "workspace", "--buildOnly", False, False, True, False),
    Generation("8.4", (8, 4), True, True, True, True, True, False, True,
               "pool", "--buildOnly", False, False, True, False),
    Generation("8.5", (8, 5), True, True, True, True, True, True, True,
               "pool", "--buildOnly", True, False, True, False),
    Generation("8.6", (8, 6), True, True, True, True, True, True, True,
               "pool", "--skipInference", True, False, True, False),
    Generation("10.x", (10, 0), False, False, True, True, True, True, False,
               "pool_suffix", "--skipInference", True, False, True, False),
    Generation("11.x", (11, 0), False, False, True, False, False, True, False,
               "pool_suffix", "--skipInference", True, True, False, True),
)


# The ONNX opset the TensorRT 7 parser reads, per minor release. 7.2: onnx-tensorrt 7.2's operators.md
# ("supports operators up to Opset 13"; opset-13 Softmax/Squeeze/Unsqueeze only came with the 21.03
# container, so 13 is the upper bound); 7.0/7.1: opset 11, the conservative figure secondary sources
# give (not read from 7.1's own docs). 8.0+: the device profiles' max_onnx_opset.
MAX_ONNX_OPSET_7 = {(7, 0): 11, (7, 1): 11, (7, 2): 13}


def generation(version: str) -> Generation:
    """The generation a TensorRT version string ('8.2.1', '10.3', '11.4.0.1') belongs to, to build for.

    TensorRT 7 has a row (:func:`known_generation`: reading its logs, what trtexec 7 accepts) but
    edgekit does not build for it: refused here with what it lacks.
    """
    gen = known_generation(version)
    if not gen.buildable:
        raise InputError(f"TensorRT {version} is not supported for building: TensorRT 7 parses no Q/DQ INT8 "
                         f"and ONNX opset <= {max_onnx_opset(version)} only",
                         hint="edgekit builds with TensorRT 8.0 and newer (JetPack 4.6+ on Jetson)")
    return gen


def max_onnx_opset(version: str):
    """The highest ONNX opset TensorRT ``version``'s parser reads when this table knows it (7.x), else None."""
    v = parse_version(version)[:2]
    return MAX_ONNX_OPSET_7.get((v + (0,))[:2]) if v and v[0] == 7 else None


def known_generation(version: str) -> Generation:
    """The row of ``version`` (7.0 and newer), buildable or not."""
    v = parse_version(version)[:2]
    if len(v) < 1 or v < (7, 0):
        raise InputError(f"TensorRT {version!r} is not supported", hint="edgekit supports TensorRT 8.0 and newer")
    if len(v) == 1:
        v = (v[0], 0)
    found = None
    for gen in GENERATIONS:
        if v >= gen.since:
            found = gen
    if v[0] in (9,) or v[0] > 11:
        # 9.x was a desktop-only LLM preview; > 11 is unknown: refuse rather than guess.
        raise InputError(f"TensorRT {version} is not a version edgekit knows",
                         hint="use one of 8.0-8.6, 10.x, 11.x (or --trt-version to pick one)")
    if v[0] == 7 and v not in MAX_ONNX_OPSET_7:
        raise InputError(f"TensorRT {version} is not a version edgekit knows", hint="TensorRT 7 releases were 7.0-7.2")
    assert found is not None
    return found


# trtexec flags that only some generations know: flag -> (first, last) generation name that accepts it.
# The TensorRT 10.3 log in tests/fixtures/trtexec (`[E] Unknown option: --workspace / --buildOnly /
# --explicitBatch`) shows the removals in 10.
_TRTEXEC_FLAG_SPAN = {
    "--explicitBatch": ("7.x", "8.6"), "--workspace": ("7.x", "8.6"), "--buildOnly": ("7.x", "8.6"),
    "--memPoolSize": ("8.4", "11.x"), "--skipInference": ("8.6", "11.x"),
    "--timingCacheFile": ("8.0-8.3", "11.x"), "--sparsity": ("8.0-8.3", "11.x"),
    "--noDataTransfers": ("8.0-8.3", "11.x"),
}


def unknown_trtexec_flags(version: str, argv) -> list:
    """The flags in a trtexec ``argv`` that the trtexec of TensorRT ``version`` does not accept."""
    names = [g.name for g in GENERATIONS]
    at = names.index(known_generation(version).name)
    bad = []
    for arg in argv:
        flag = str(arg).split("=", 1)[0]
        span = _TRTEXEC_FLAG_SPAN.get(flag)
        if span and not names.index(span[0]) <= at <= names.index(span[1]):
            bad.append(flag)
    return bad


def dla_available(version: str) -> bool:
    """DLA support in TensorRT: up to 10.7, dropped, back in 11.4 (AGX Orin)."""
    v = parse_version(version)[:2]
    return v < (10, 8) or v >= (11, 4)


def version_tag(version: str) -> str:
    """'10.3.0' -> '10.3' (what file names and manifests compare)."""
    v = parse_version(version)
    return ".".join(str(x) for x in v[:2]) if v else version
