"""Load and save ONNX models safely.

* ``load_model`` turns every way a file can be wrong (missing, not protobuf, truncated, protobuf but
  not a model, missing external data) into an :class:`~edgekit.errors.ModelLoadError` with a hint.
  It never writes to the input.
* ``save_model`` / ``atomic_output`` write to a temporary file next to the destination and rename
  it into place only when everything succeeded, so a failure never leaves a half-written model.
  Models over protobuf's 2 GiB limit are saved with external data (``OUT.onnx.data``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

from edgekit.errors import InputError, ModelLoadError

PathLike = Union[str, "os.PathLike[str]"]
_TWO_GIB = 2**31 - 1


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type (numpy dtype name) and shape (ints, or strings for symbolic dims)."""

    name: str
    dtype: str
    shape: Tuple[Union[int, str, None], ...]

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def load_model(path: PathLike, load_external_data: bool = True):
    """Read an ONNX model, raising ModelLoadError with a useful hint on any malformed input."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"no such file: {p}", hint="check the path")
    if p.is_dir():
        raise ModelLoadError(f"{p} is a directory, not an ONNX file")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p} is empty", hint="re-export the model")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(
            f"{p} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:120]})",
            hint="the file may be truncated or not ONNX at all; re-export it",
        ) from exc
    except Exception as exc:  # protobuf raises a variety of internal errors on garbage input
        raise ModelLoadError(f"{p} is not a readable ONNX model ({type(exc).__name__})",
                             hint="the file may be truncated or not ONNX at all") from exc
    if not model.HasField("graph") or (len(model.graph.node) == 0 and len(model.graph.output) == 0):
        raise ModelLoadError(f"{p} parsed as protobuf but holds no ONNX graph",
                             hint="is this really an .onnx file (not a TensorRT engine or a checkpoint)?")
    if not model.opset_import:
        raise ModelLoadError(f"{p} declares no opset", hint="the file is not a valid ONNX model")
    if load_external_data and _uses_external_data(model):
        try:
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(p.parent))
        except Exception as exc:  # OSError, ValueError, onnx's ValidationError
            raise ModelLoadError(
                f"{p} refers to external weight data that could not be read: {exc}",
                hint="keep the .data file next to the .onnx file it belongs to",
            ) from exc
    return model


def _uses_external_data(model) -> bool:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return any(uses_external_data(t) for t in _get_all_tensors(model))


@contextlib.contextmanager
def atomic_output(dest: PathLike, suffix: Optional[str] = None) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only if the block succeeds.

    On any exception the temporary file is removed, so no half-written output is left behind.
    """
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"output folder {parent} does not exist", hint="create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=str(parent))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def save_model(model, dest: PathLike, external_data: Optional[bool] = None) -> Path:
    """Save atomically. External data is used when asked or when the model exceeds 2 GiB."""
    import onnx

    dest = Path(dest)
    size = model.ByteSize()
    use_external = external_data if external_data is not None else size > _TWO_GIB
    if not use_external:
        with atomic_output(dest) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(model.SerializeToString())
        return dest
    data_name = dest.name + ".data"
    data_dest = dest.parent / data_name
    with atomic_output(data_dest) as tmp_data:
        # onnx writes the weights to `location` relative to the model's folder; write them to the
        # temporary name, then rename both files into place.
        import copy

        m = copy.deepcopy(model)
        onnx.external_data_helper.convert_model_to_external_data(
            m, all_tensors_to_one_file=True, location=tmp_data.name,
            size_threshold=0 if external_data else 1024
        )
        with atomic_output(dest) as tmp_model:
            onnx.save_model(m, str(tmp_model))
            # point the model at the final data file name
            m2 = onnx.load(str(tmp_model), load_external_data=False)
            for t in onnx.external_data_helper._get_all_tensors(m2):
                for entry in t.external_data:
                    if entry.key == "location":
                        entry.value = data_name
            with open(tmp_model, "wb") as fh:
                fh.write(m2.SerializeToString())
    return dest


_ONNX_TO_NP = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
}


def model_input_specs(model) -> List[TensorSpec]:
    """Graph inputs that are not initializers, with dtype and (possibly symbolic) shape."""
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims: List[Union[int, str, None]] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        specs.append(TensorSpec(vi.name, _ONNX_TO_NP.get(tt.elem_type, "float32"), tuple(dims)))
    return specs


def model_output_specs(model) -> List[TensorSpec]:
    specs = []
    for vi in model.graph.output:
        tt = vi.type.tensor_type
        dims: List[Union[int, str, None]] = []
        for d in tt.shape.dim:
            dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None))
        specs.append(TensorSpec(vi.name, _ONNX_TO_NP.get(tt.elem_type, "float32"), tuple(dims)))
    return specs


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (manifests of engines and bundles)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
