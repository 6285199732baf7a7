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
import copy
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import _get_all_tensors, load_external_data_for_model, uses_external_data

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
            load_external_data_for_model(model, str(p.parent))
        except Exception as exc:  # OSError, ValueError, onnx's ValidationError
            raise ModelLoadError(
                f"{p} refers to external weight data that could not be read: {exc}",
                hint="keep the .data file next to the .onnx file it belongs to",
            ) from exc
    return model


def _uses_external_data(model) -> bool:
    return any(uses_external_data(t) for t in _get_all_tensors(model))


# ---- the atomic writer ---------------------------------------------------------------------------
#
# Temporary files are named ``.OUT.ek-HOST-PID.XXXXXXXX.tmp``: the writer's host and process id are
# in the name, so a later run can tell the leftovers of a killed process (SIGKILL, power loss) from
# files another live writer is still filling, and remove only the former.

_TEMP_RE = re.compile(r"^\..+\.ek-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.[a-z0-9_]{8}(?:\.[A-Za-z0-9_]+)*$")


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def temp_prefix(dest: PathLike) -> str:
    """Prefix for a temporary file or folder beside ``dest`` that :func:`sweep_stale_temps` can clean."""
    return f".{Path(dest).name}.ek-{_host_tag()}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's live process (or a number we cannot ask about): keep its files
    return True


def sweep_stale_temps(folder: PathLike) -> List[Path]:
    """Remove the temporary files (and folders) that dead edgekit processes of this host left in
    ``folder``; returns what was removed. Never raises."""
    removed: List[Path] = []
    host = _host_tag()
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".")]
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or m.group("host") != host or _pid_alive(int(m.group("pid"))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def current_umask() -> int:
    """The process umask, read without changing it where /proc tells it (thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free some space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "write elsewhere, or fix the folder's permissions",
    errno.EPERM: "write elsewhere, or fix the folder's permissions",
    errno.EISDIR: "a folder is in the way: give a file path",
    errno.ENOTDIR: "part of the path is a file, not a folder",
}


def write_error(dest: PathLike, exc: OSError) -> InputError:
    """The one-line error for an OSError met while writing ``dest``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return InputError(f"cannot write {dest}: {reason}", hint=_WRITE_HINTS.get(exc.errno or 0, "write elsewhere"))


def check_output_place(dest: PathLike) -> Path:
    """Refuse a ``dest`` that cannot be written as a file (its folder is missing, is a file, or is
    not writable; ``dest`` itself is a folder); return the folder."""
    dest = Path(dest)
    if dest.is_dir():
        raise InputError(f"output {dest} is a folder", hint="give a file path")
    return check_output_folder(dest.parent if str(dest.parent) else Path("."), dest)


def check_output_folder(parent: PathLike, dest: PathLike) -> Path:
    """Refuse a folder ``parent`` that cannot take a new entry ``dest``; return it."""
    parent = Path(parent)
    if not parent.exists():
        if any(p.exists() and not p.is_dir() for p in parent.parents):
            raise InputError(f"cannot write {dest}: part of its folder path is a file, not a folder")
        raise InputError(f"output folder {parent} does not exist", hint="create it first")
    if not parent.is_dir():
        raise InputError(f"cannot write {dest}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only_fs(parent) else "permission denied"
        raise InputError(f"cannot write {dest}: {reason} in {parent}", hint="write elsewhere")
    return parent


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def atomic_output(dest: PathLike, suffix: Optional[str] = None) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only if the block succeeds.

    On any exception the temporary file is removed, so no half-written output is left behind; an
    OSError (read-only folder, full disk, a folder at ``dest``) becomes a one-line InputError. The
    output gets the mode a new file would (0666 less the umask), and stale temporary files of dead
    processes in the same folder are removed first.
    """
    dest = Path(dest)
    parent = check_output_place(dest)
    sweep_stale_temps(parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=suffix or ".tmp", dir=str(parent))
    except OSError as exc:
        raise write_error(dest, exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp's (or onnx's) 0600 is not the user's mode
        os.replace(tmp_path, dest)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError):
            raise write_error(dest, exc) from exc
        raise


def save_model(model, dest: PathLike, external_data: Optional[bool] = None) -> Path:
    """Save atomically. External data is used when asked or when the model exceeds 2 GiB."""
    dest = Path(dest)
    size = _tensor_bytes(model) + len(model.graph.node) * 256  # ByteSize() would serialise the model once more
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
        # temporary name, then rename both files into place. onnx refuses a location that exists
        # (tested relative to the current folder), so the reserved name is freed first.
        tmp_data.unlink()
        m = copy.deepcopy(model)
        onnx.external_data_helper.convert_model_to_external_data(
            m, all_tensors_to_one_file=True, location=tmp_data.name,
            size_threshold=0 if external_data else 1024
        )
        with atomic_output(dest) as tmp_model:
            onnx.save_model(m, str(tmp_model))
            # point the model at the final data file name
            m2 = onnx.load(str(tmp_model), load_external_data=False)
            for t in _get_all_tensors(m2):
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


def default_opset(model) -> int:
    """The model's opset of the default ONNX domain (0 when it imports none)."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 0


def input_channel_axis(model, name: str, shape: Sequence) -> int:
    """The channel axis of image input ``name``: 1 (NCHW, ONNX's own layout) unless the graph reads
    it channels-last. That is the case when every node reading the input is a Transpose that moves
    the last axis to position 1 (what tf2onnx and other TensorFlow / Keras converters write in front
    of the first convolution), or, failing a Transpose to go by, when a 4-D input's last dimension
    is 1, 3 or 4 (grey, RGB, RGBA) and its second is none of those."""
    rank = len(shape)
    if rank < 3:
        return 1
    users = [n for n in model.graph.node if name in n.input]
    if users and all(n.op_type == "Transpose" for n in users):
        perms = {tuple(onnx.helper.get_attribute_value(a)) for n in users for a in n.attribute if a.name == "perm"}
        if len(perms) == 1 and all(any(a.name == "perm" for a in n.attribute) for n in users):
            perm = next(iter(perms))
            if len(perm) == rank and perm[0] == 0 and perm[1] in (1, rank - 1):
                return int(perm[1])
    if users and any(n.op_type in ("Conv", "BatchNormalization") and n.input[0] == name for n in users):
        return 1  # read by a convolution as it is: NCHW
    if rank == 4 and shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return rank - 1
    return 1


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


# --------------------------------------------------------------------------------------------
# Lean loading and streaming saving (the pruner's memory budget)
#
# ``onnx.load`` holds the file's bytes and the parsed message at once (2x the model), and every
# numpy view of a ``raw_data`` field is another copy, because protobuf hands out a fresh ``bytes``
# object each time it is read. For a whole-file pass such as ``edgekit prune`` the weights are
# therefore read once, straight from the file into numpy arrays, and the ModelProto keeps only a
# reference to them: a standard ONNX external-data entry (location, offset, length) that points
# into the source file itself, where the bytes really are. The arrays live in a ``WeightStore``;
# ``stored_array`` resolves such a reference while the store is active, and ``save_lean`` writes
# the model back tensor by tensor, never building the whole serialised file in memory.
# --------------------------------------------------------------------------------------------

_LEAN_MIN_ELEMENTS = 64  # smaller tensors (and all int64 ones: shapes, indices) stay inline
_LEAN_SKIP_TYPES = (7, 9)  # int64 (shapes, indices) and bool stay inline


def raw_dtype(elem_type: int):
    """The numpy dtype of an ONNX element type's ``raw_data`` (little-endian), or None when numpy
    has no plain equivalent (strings, bfloat16, float8, ...)."""
    name = _ONNX_TO_NP.get(elem_type)
    return None if name is None else np.dtype(name).newbyteorder("<")


class _WireError(Exception):
    """The file is not well-formed protobuf (the caller falls back to the full loader)."""


class WeightStore:
    """Weights of a lean-loaded model: ``(location, offset) -> array`` (read-only arrays)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.arrays: dict = {}

    def lookup(self, tensor):
        ref = {e.key: e.value for e in tensor.external_data}
        if ref.get("location") != self.location:
            return None
        return self.arrays.get(int(ref.get("offset", "0")))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


_ACTIVE_STORES: List[WeightStore] = []


@contextlib.contextmanager
def weight_store(store: WeightStore) -> Iterator[WeightStore]:
    """Make ``store`` resolvable by :func:`stored_array` inside the block."""
    _ACTIVE_STORES.append(store)
    try:
        yield store
    finally:
        _ACTIVE_STORES.remove(store)


def stored_array(tensor):
    """The array behind an external-data TensorProto held by an active WeightStore, else None."""
    for store in reversed(_ACTIVE_STORES):
        arr = store.lookup(tensor)
        if arr is not None:
            return arr
    return None


def _varint(fh) -> int:
    shift = result = 0
    while True:
        b = fh.read(1)
        if not b:
            raise _WireError("unexpected end of file")
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _WireError("varint too long")


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(fh, end: int):
    """Yield ``(field number, wire type, start of field, start of payload, payload length)``
    for the fields between the current position and ``end``; the caller may read the payload,
    the generator seeks past it."""
    while fh.tell() < end:
        start = fh.tell()
        key = _varint(fh)
        num, wt = key >> 3, key & 7
        if wt == 0:
            _varint(fh)
            yield num, wt, start, fh.tell(), 0
            continue
        if wt == 1:
            length = 8
        elif wt == 5:
            length = 4
        elif wt == 2:
            length = _varint(fh)
        else:
            raise _WireError(f"unsupported wire type {wt}")
        payload = fh.tell()
        if payload + length > end:
            raise _WireError("field runs past its message")
        yield num, wt, start, payload, length
        fh.seek(payload + length)


def _read_span(fh, start: int, stop: int) -> bytes:
    here = fh.tell()
    fh.seek(start)
    data = fh.read(stop - start)
    fh.seek(here)
    return data


def external_data_files(path: PathLike) -> List[Path]:
    """The external-data files the initializers of the ONNX model at ``path`` refer to (beside
    it), read from the wire format without loading any weights; [] when there are none or the
    file is not readable protobuf (the loader explains that)."""
    p = Path(path)
    locations: List[str] = []
    try:
        with open(p, "rb", buffering=1 << 16) as fh:
            for num, wt, _, payload, length in _fields(fh, os.fstat(fh.fileno()).st_size):
                if num != 7 or wt != 2:  # ModelProto.graph
                    continue
                fh.seek(payload)
                for gnum, gwt, _, gp, gn in _fields(fh, payload + length):
                    if gnum != 5 or gwt != 2:  # GraphProto.initializer
                        continue
                    fh.seek(gp)
                    for tnum, twt, _, tp, tn in _fields(fh, gp + gn):
                        if tnum == 13 and twt == 2:  # TensorProto.external_data
                            entry = onnx.StringStringEntryProto()
                            entry.ParseFromString(_read_span(fh, tp, tp + tn))
                            if entry.key == "location" and entry.value not in locations:
                                locations.append(entry.value)
    except (OSError, _WireError, DecodeError):
        return []
    return [p.parent / loc for loc in locations]


def _lean_tensor(fh, payload: int, length: int, location: str, store: WeightStore) -> bytes:
    """Serialised TensorProto for the initializer at ``payload``: large numeric raw data is read
    into the store and replaced by an external-data reference to the same bytes."""
    rest: List[bytes] = []
    raw = None
    here_end = payload + length
    fh.seek(payload)
    for num, wt, start, p, n in _fields(fh, here_end):
        if num == 9 and wt == 2:  # raw_data
            raw = (p, n)
        else:
            rest.append(_read_span(fh, start, p + n))
    fh.seek(here_end)
    t = onnx.TensorProto()
    t.ParseFromString(b"".join(rest))
    count = 1
    for d in t.dims:
        count *= d
    dtype = raw_dtype(t.data_type) if t.data_type not in _LEAN_SKIP_TYPES else None
    if raw is not None and t.data_location == 0 and dtype is not None and count > _LEAN_MIN_ELEMENTS \
            and raw[1] == count * dtype.itemsize:
        arr = np.empty(count, dtype=dtype)
        fh.seek(raw[0])
        if fh.readinto(memoryview(arr).cast("B")) != raw[1]:
            raise _WireError("tensor data runs past the end of the file")
        fh.seek(here_end)
        arr.flags.writeable = False
        store.arrays[raw[0]] = arr.reshape(tuple(t.dims))
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(raw[0])), ("length", str(raw[1]))):
            e = t.external_data.add()
            e.key, e.value = k, v
    elif raw is not None:
        t.raw_data = _read_span(fh, raw[0], raw[0] + raw[1])
    return t.SerializeToString()


def load_model_lean(path: PathLike):
    """Load ``path`` with its large weights read once into a :class:`WeightStore`.

    Returns ``(model, store)``; ``store`` is None when the file was loaded the ordinary way
    (external data files, anything unusual in the wire format: :func:`load_model` then gives the
    error messages). Use the model inside ``with weight_store(store):`` and write it with
    :func:`save_lean`; it must not be saved with ``onnx.save`` (its references point into the
    source file).
    """
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0 or p.stat().st_size > _TWO_GIB:
        return load_model(p), None
    store = WeightStore(p.name)
    top: List[bytes] = []
    graph: List[bytes] = []
    try:
        with open(p, "rb", buffering=1 << 16) as fh:
            size = p.stat().st_size
            n_graph = 0
            for num, wt, start, payload, length in _fields(fh, size):
                if num == 7 and wt == 2:  # ModelProto.graph
                    n_graph += 1
                    fh.seek(payload)
                    span_start = None
                    for gnum, gwt, gstart, gp, gn in _fields(fh, payload + length):
                        if gnum == 5 and gwt == 2:  # GraphProto.initializer
                            if span_start is not None:
                                graph.append(_read_span(fh, span_start, gstart))
                                span_start = None
                            body = _lean_tensor(fh, gp, gn, store.location, store)
                            graph.append(b"\x2a" + _enc_varint(len(body)) + body)
                        elif span_start is None:
                            span_start = gstart
                    if span_start is not None:
                        graph.append(_read_span(fh, span_start, payload + length))
                else:
                    top.append(_read_span(fh, start, payload + length))
            if n_graph != 1:
                raise _WireError("not exactly one graph")
        model = onnx.ModelProto()
        model.ParseFromString(b"".join(top))
        model.graph.ParseFromString(b"".join(graph))
    except Exception:  # noqa: BLE001 - anything odd: the full loader decides and explains
        return load_model(p), None
    if not model.opset_import or (len(model.graph.node) == 0 and len(model.graph.output) == 0):
        return load_model(p), None
    if any(t.data_location == 1 and store.lookup(t) is None for t in model.graph.initializer):
        return load_model(p), None  # the model has its own external data file
    return model, store


def _encode_field(num: int, payload: bytes) -> bytes:
    return _enc_varint((num << 3) | 2) + _enc_varint(len(payload)) + payload


def save_lean(model, dest: PathLike, store: Optional[WeightStore] = None) -> Path:
    """Save ``model`` atomically, one initializer at a time.

    The graph is written without its initializers, then each initializer follows as its own
    ``graph { initializer {...} }`` record; protobuf merges repeated occurrences of a message
    field, so readers see one ordinary graph. Initializers that reference ``store`` are written
    with their data inline. Peak memory: the largest single tensor, not the whole file.
    """
    dest = Path(dest)
    if _tensor_bytes(model) > _TWO_GIB:
        raise InputError("the model is over protobuf's 2 GiB limit for a single file",
                         hint="save it with external data (edgekit.graph.io.save_model)")
    header = onnx.ModelProto()
    for fd, value in model.ListFields():
        if fd.name != "graph":
            _copy_field(header, fd, value)
    for fd, value in model.graph.ListFields():
        if fd.name != "initializer":
            _copy_field(header.graph, fd, value)
    if not model.graph.initializer:
        header.graph.SetInParent()
    with atomic_output(dest) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.SerializeToString())
            for t in model.graph.initializer:
                arr = store.lookup(t) if (store is not None and t.data_location == 1) else None
                if arr is not None:
                    inline = onnx.TensorProto()
                    inline.CopyFrom(t)
                    del inline.external_data[:]
                    inline.ClearField("data_location")
                    inline.raw_data = arr.tobytes()
                    body = inline.SerializeToString()
                    del inline
                else:
                    body = t.SerializeToString()
                fh.write(_encode_field(7, _encode_field(5, body)))
    return dest


def _tensor_bytes(model) -> int:
    """Bytes of the initializers and Constant tensors from their dims (``ByteSize()`` would serialise the model)."""
    total = 0
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.type == 4]  # Constant values
    for t in tensors:
        n = 1
        for d in t.dims:
            n *= d
        dt = raw_dtype(t.data_type)
        total += n * (dt.itemsize if dt is not None else 8)
    return total


def _copy_field(msg, fd, value) -> None:
    repeated = getattr(fd, "is_repeated", None)
    if repeated is None:  # older protobuf
        repeated = fd.label == fd.LABEL_REPEATED
    if repeated:
        getattr(msg, fd.name).extend(value)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(msg, fd.name).CopyFrom(value)
    else:
        setattr(msg, fd.name, value)
