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


GENERATIONS = (
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


def generation(version: str) -> Generation:
    """The generation a TensorRT version string ('8.2.1', '10.3', '11.4.0.1') belongs to."""
    v = parse_version(version)[:2]
    if len(v) < 1 or v < (8, 0):
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
    assert found is not None
    return found


def dla_available(version: str) -> bool:
    """DLA support in TensorRT: up to 10.7, dropped, back in 11.4 (AGX Orin)."""
    v = parse_version(version)[:2]
    return v < (10, 8) or v >= (11, 4)


def version_tag(version: str) -> str:
    """'10.3.0' -> '10.3' (what file names and manifests compare)."""
    v = parse_version(version)
    return ".".join(str(x) for x in v[:2]) if v else version
