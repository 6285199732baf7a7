"""Deployment bundles: one folder a user copies to the board, builds there on first start, and runs.

Why build on the board: a TensorRT engine is tied to the TensorRT release and the GPU it was built
with, so the bundle carries the ONNX model (plus calibration cache, device profile and the exporter
recipe with the pre/post-processing settings) and a ``run.sh`` that builds the engine on the board
the first time, keyed by the board's L4T release and TensorRT library, and reuses it afterwards.

Layout::

    BUNDLE/
      model.onnx (+ its external weight files)   calib.cache (optional)
      device.toml      recipe.toml (optional)     run.sh     README.txt
      manifest.json    (sha256 + size of every other file, the build settings)
      SHA256SUMS       (the same hashes in `sha256sum -c` form, so the board can verify without edgekit)

The bundle is written into a temporary folder next to the destination and renamed into place at the
end, so an error never leaves half a bundle. ``verify_bundle`` recomputes every hash.

Only the bundle writing and verification run here; ``run.sh`` was checked with ``sh -n`` and by
running its verify step, never on a board.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from onnx.external_data_helper import _get_all_tensors, uses_external_data

from edgekit import __version__
from edgekit._resources import data_dir
from edgekit.devices import get_profile
from edgekit.engine import plan_build
from edgekit.errors import EdgekitError, InputError
from edgekit.graph.io import load_model, model_input_specs, model_output_specs, sha256_file, temp_prefix
from edgekit.graph.view import check_inputs_defined
from edgekit.trt.trtexec import benchmark_command, trtexec_command

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11 on older JetPacks
    import tomli as tomllib

PathLike = Union[str, "os.PathLike[str]"]

BUNDLE_FORMAT = "edgekit-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"
# Folders run.sh creates on the board: not part of the verified contents.
RUNTIME_DIRS = ("engines", "results")


@dataclass
class BundleReport:
    path: str
    device: str
    precision: str
    files: Dict[str, dict]
    recipe: Optional[str]
    calib_cache: Optional[str]
    build_command: str
    trtexec_command: str
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerifyReport:
    path: str
    ok: bool
    checked: int
    mismatched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ---- inputs -------------------------------------------------------------------------------------

def _external_data_files(model, model_dir: Path) -> List[str]:
    """Relative locations of the model's external weight files; refuses paths leaving its folder."""
    locations = []
    for t in _get_all_tensors(model):
        if not uses_external_data(t):
            continue
        for entry in t.external_data:
            if entry.key == "location" and entry.value not in locations:
                loc = entry.value
                if os.path.isabs(loc) or ".." in Path(loc).parts:
                    raise InputError(f"external data location {loc!r} points outside the model's folder",
                                     hint="re-save the model with its weights next to it")
                if not (model_dir / loc).is_file():
                    raise InputError(f"external data file {model_dir / loc} is missing",
                                     hint="keep the .data file next to the .onnx file it belongs to")
                locations.append(loc)
    return locations


def _find_recipe(model, recipe: Optional[str], warnings: List[str]) -> Optional[Tuple[str, Path]]:
    """(family, path of the exporter recipe TOML). ``recipe``: a family name, a TOML path, 'none',
    or None for automatic: the model's ``edgekit.family`` metadata, else a unique match of its
    output names with a recipe's ``output_names``."""
    if recipe and recipe.lower() == "none":
        return None
    folder = data_dir("exporters")
    if recipe:
        p = Path(recipe)
        if p.suffix == ".toml":
            if not p.is_file():
                raise InputError(f"recipe file {p} does not exist")
            return _load_toml(p).get("family", p.stem), p
        cand = folder / f"{recipe}.toml"
        if not cand.is_file():
            known = ", ".join(sorted(q.stem for q in folder.glob("*.toml")))
            raise InputError(f"unknown recipe '{recipe}'", hint=f"one of: {known}, a .toml path, or none")
        return recipe, cand
    meta = {p.key: p.value for p in model.metadata_props}
    for key in ("edgekit.family", "edgekit.recipe", "family"):
        fam = meta.get(key)
        if fam and (folder / f"{fam}.toml").is_file():
            return fam, folder / f"{fam}.toml"
    outputs = [o.name for o in model.graph.output]
    matches = []
    for path in sorted(folder.glob("*.toml")):
        data = _load_toml(path)
        if data.get("output_names") and list(data["output_names"]) == outputs:
            matches.append((data.get("family", path.stem), path))
    if len(matches) == 1:
        return matches[0]
    if matches:
        warnings.append("the model's outputs fit several recipes (" + ", ".join(m[0] for m in matches) +
                        "): taking " + matches[0][0] + "; pass --recipe to choose")
        return matches[0]
    warnings.append("no exporter recipe matches the model's outputs: the bundle has no pre/post-processing "
                    "settings (pass --recipe NAME|PATH)")
    return None


def _load_toml(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path} is not valid TOML: {exc}") from exc


# ---- the run script -----------------------------------------------------------------------------

def _shell_word(arg: str, subs: Sequence[Tuple[str, str]]) -> str:
    """Quote one argv word for sh, replacing absolute temp paths by shell variables."""
    for absolute, expr in subs:
        if absolute and absolute in arg:
            before, after = arg.split(absolute, 1)
            return (shlex.quote(before) if before else "") + expr + (shlex.quote(after) if after else "")
    return shlex.quote(arg)


def _shell_line(argv: Sequence[str], subs: Sequence[Tuple[str, str]]) -> str:
    return " ".join(_shell_word(str(a), subs) for a in argv)


_RUN_SH = r"""#!/bin/sh
# edgekit deployment bundle: @MODEL@ for @DISPLAY@ (@DEVICE@), precision @PRECISION@.
# Generated by edgekit @VERSION@ on @CREATED@. Copy the whole folder to the board, then:
#
#   ./run.sh            verify, build the engine on first start (cached in engines/), run `edgekit profile`
#   ./run.sh build      verify and build the engine only
#   ./run.sh verify     check every file against SHA256SUMS
#   ./run.sh trtexec    build and time with trtexec alone (no edgekit needed: the JetPack 4 path)
#   ./run.sh worker --address HEAD:PORT   join a board farm (`edgekit worker`, needs edgekit[cluster])
#
# Extra arguments after the mode go to `edgekit profile` (or to trtexec in trtexec mode).
# Environment: EDGEKIT (edgekit command), TRTEXEC (trtexec binary), EDGEKIT_BACKEND (tensorrt|trtexec),
# EDGEKIT_BUILD_ARGS (extra `edgekit build` flags, e.g. "--sparse --dla 0 --gpu-fallback"), ENGINE_DIR.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
MODE=${1:-profile}
if [ $# -gt 0 ]; then shift; fi
EDGEKIT=${EDGEKIT:-edgekit}
TRTEXEC=${TRTEXEC:-$(command -v trtexec 2>/dev/null || echo /usr/src/tensorrt/bin/trtexec)}
BACKEND=${EDGEKIT_BACKEND:-@BACKEND@}
DEVICE=@DEVICE@
PRECISION=@PRECISION@

verify() {
    if command -v sha256sum >/dev/null 2>&1; then
        if ! sha256sum -c --quiet SHA256SUMS; then
            echo "run.sh: bundle files do not match SHA256SUMS: copy the bundle again" >&2
            exit 2
        fi
    else
        echo "run.sh: warning: sha256sum not found, bundle not verified" >&2
    fi
}

# An engine only loads on the TensorRT release and GPU it was built with: key the engine cache by the
# L4T release (which fixes TensorRT on a Jetson), the board model and the TensorRT library present.
board_key() {
    {
        head -n 1 /etc/nv_tegra_release 2>/dev/null || true
        cat /proc/device-tree/model 2>/dev/null | tr -d '\000' || true
        ls /usr/lib/aarch64-linux-gnu/libnvinfer.so.* /usr/lib/x86_64-linux-gnu/libnvinfer.so.* 2>/dev/null | sort | tail -n 1
        uname -m
    } | cksum | cut -d' ' -f1
}
ENGINE_DIR=${ENGINE_DIR:-$HERE/engines/$(board_key)}
ENGINE="$ENGINE_DIR/model.engine"

have_edgekit() { command -v "$EDGEKIT" >/dev/null 2>&1; }

build() {
    if [ -s "$ENGINE" ]; then
        echo "run.sh: using the cached engine $ENGINE" >&2
        return 0
    fi
    mkdir -p "$ENGINE_DIR"
    if have_edgekit && [ "$MODE" != trtexec ]; then
        echo "run.sh: building the engine (first start, this takes minutes)" >&2
        # shellcheck disable=SC2086
        @BUILD_LINE@ ${EDGEKIT_BUILD_ARGS:-}
    else
        if [ ! -x "$TRTEXEC" ]; then
            echo "run.sh: neither edgekit nor trtexec ($TRTEXEC) found: install edgekit or set TRTEXEC" >&2
            exit 3
        fi
        echo "run.sh: building the engine with trtexec (flags for TensorRT @TRT@)" >&2
        @TRTEXEC_BUILD_LINE@
        mv "$ENGINE_DIR/model.engine.partial" "$ENGINE"
    fi
}

case "$MODE" in
    verify)
        verify
        echo "run.sh: bundle OK"
        ;;
    build)
        verify
        build
        echo "$ENGINE"
        ;;
    profile)
        if ! have_edgekit; then
            echo "run.sh: edgekit not found; use ./run.sh trtexec, or set EDGEKIT" >&2
            exit 3
        fi
        verify
        build
        mkdir -p "$HERE/results"
        "$EDGEKIT" profile "$ENGINE" --device "$DEVICE" --backend "$BACKEND" \
            --json "$HERE/results/profile-$(date +%Y%m%d-%H%M%S).json" "$@"
        ;;
    trtexec)
        verify
        build
        mkdir -p "$HERE/results"
        @TRTEXEC_RUN_LINE@ "$@"
        ;;
    worker)
        "$EDGEKIT" worker --device "$DEVICE" --block "$@"
        ;;
    *)
        echo "usage: $0 [profile|build|verify|trtexec|worker] [args...]" >&2
        exit 64
        ;;
esac
"""

_README = """edgekit deployment bundle
=========================
model      {model} (sha256 {sha})
device     {display} ({device}); built on the board with TensorRT {trt} (JetPack {jetpack})
precision  {precision}
recipe     {recipe}

On the board:  ./run.sh          (verify, build the engine once, then `edgekit profile`)
               ./run.sh trtexec  (no edgekit needed, e.g. JetPack 4 with Python 3.6)
Everything is listed with its sha256 in manifest.json and SHA256SUMS (`sha256sum -c SHA256SUMS`).
"""


# ---- bundle creation ----------------------------------------------------------------------------

def create_bundle(model: PathLike, device: str, output: PathLike, calib_cache: Optional[PathLike] = None,
                  precision: str = "auto", recipe: Optional[str] = None, trt_version: Optional[str] = None,
                  force: bool = False) -> BundleReport:
    """Write a deployment bundle for ``model`` on ``device`` into the folder ``output``.

    Validation is the one ``edgekit build`` does (``plan_build``: device with TensorRT,
    precision, calibration cache header vs the profile's TensorRT), run here so that a bundle that
    cannot build on the board is refused on the desk. ``output`` must not exist, or be an empty
    folder, unless ``force``.
    """
    src = Path(model)
    out = Path(output)
    prof = get_profile(device)
    if src.suffix.lower() != ".onnx":
        raise InputError(f"{src} is not an .onnx file", hint="deploy takes an ONNX model (see `edgekit export`)")
    onnx_model = load_model(src, load_external_data=False)
    check_inputs_defined(onnx_model)
    ext_files = _external_data_files(onnx_model, src.parent)
    if calib_cache is not None and not Path(calib_cache).is_file():
        raise InputError(f"calibration cache {calib_cache} does not exist")
    parent = _check_output(out, src, force)

    warnings: List[str] = []
    found = _find_recipe(onnx_model, recipe, warnings)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=".tmp", dir=str(parent))).resolve()
    try:
        calib_name, recipe_family = _copy_inputs(tmp, src, ext_files, calib_cache, prof, found)
        # Validate exactly as `edgekit build` will on the board, and derive the trtexec fallback.
        try:
            plan = plan_build(tmp / "model.onnx", device=prof.name, output=tmp / "model.engine.partial",
                              precision=precision, calib_cache=(tmp / calib_name) if calib_name else None,
                              timing_cache=tmp / "timing.cache", backend="trtexec", trt_version=trt_version,
                              calib_flags="--calib-cache CACHE")
        except EdgekitError as exc:
            # the plan saw the bundle's copies: name the user's files instead
            _name_user_files(exc, [(tmp / "model.onnx", src)] + ([(tmp / calib_name, Path(calib_cache))]
                                                                 if calib_name else []))
            raise
        warnings.extend(plan.warnings)
        lines = {"build": _edgekit_build_line(prof.name, precision, calib_name),
                 "trtexec_build": _trtexec_build_line(plan, tmp, calib_name),
                 "trtexec_run": _trtexec_run_line(plan)}
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        backend = "trtexec" if prof.preferred_backend == "trtexec" else "tensorrt"
        _write_run_script(tmp, src.name, prof, plan, precision, created, backend, lines)
        src_sha = sha256_file(src)
        (tmp / "README.txt").write_text(_README.format(model=src.name, sha=src_sha[:16], display=prof.display_name,
                                                       device=prof.name, trt=plan.trt_version, jetpack=plan.jetpack or "-",
                                                       precision=precision, recipe=recipe_family or "none"))
        files = _hash_files(tmp)
        manifest = {
            "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "created_utc": created,
            "edgekit_version": __version__,
            "device": {"name": prof.name, "display_name": prof.display_name, "sm": prof.sm_tag,
                       "tensorrt": plan.trt_version, "jetpack": plan.jetpack, "l4t": plan.l4t,
                       "preferred_backend": prof.preferred_backend},
            "model": _model_entry(onnx_model, src, src_sha, ext_files, plan),
            "precision": precision, "planned_precision": plan.precision, "int8_mode": plan.int8_mode,
            "calib_cache": calib_name, "recipe": "recipe.toml" if recipe_family else None, "recipe_family": recipe_family,
            "run": {**lines, "profile_backend": backend},
            "warnings": warnings,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        (tmp / CHECKSUMS).write_text("".join(f"{v['sha256']}  {k}\n" for k, v in files.items()))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; a bundle is a normal folder
        _move_into_place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BundleReport(path=str(out), device=prof.name, precision=precision, files=files, recipe=recipe_family,
                        calib_cache=calib_name, build_command=lines["build"], trtexec_command=lines["trtexec_build"],
                        warnings=warnings)


def _name_user_files(exc: EdgekitError, copies: Sequence[Tuple[Path, Path]]) -> None:
    """Reword ``exc`` (in place) so that it names the user's files, not their copies in the bundle's
    temp folder."""
    for copy, orig in copies:
        exc.message = exc.message.replace(str(copy), str(orig))
        if exc.hint:
            exc.hint = exc.hint.replace(str(copy), str(orig))
    exc.args = (exc.message,)


def _check_output(out: Path, src: Path, force: bool) -> Path:
    """Refuse an output folder that holds files (unless ``force``) or the input; return its parent."""
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            pass
        elif not force:
            raise InputError(f"output {out} already exists and is not empty", hint="choose a new folder or pass --force")
        elif out.resolve() in (src.resolve().parent, Path.cwd().resolve()) or out.resolve() in src.resolve().parents:
            raise InputError(f"refusing to replace {out}: it holds the input model")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist", hint="create it first")
    return parent


def _copy_inputs(tmp: Path, src: Path, ext_files: Sequence[str], calib_cache: Optional[PathLike], prof,
                 found: Optional[Tuple[str, Path]]) -> Tuple[Optional[str], Optional[str]]:
    """Copy the model (and its weight files), calibration cache, device profile and recipe into
    ``tmp``; return (calibration cache file name, recipe family), each None when absent."""
    shutil.copyfile(src, tmp / "model.onnx")
    for loc in ext_files:
        (tmp / loc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.parent / loc, tmp / loc)
    calib_name = None
    if calib_cache is not None:
        calib_name = "calib.cache"
        shutil.copyfile(calib_cache, tmp / calib_name)
    if prof.source and Path(prof.source).is_file():
        shutil.copyfile(prof.source, tmp / "device.toml")
    recipe_family = None
    if found is not None:
        recipe_family = found[0]
        shutil.copyfile(found[1], tmp / "recipe.toml")
    return calib_name, recipe_family


def _trtexec_build_line(plan, tmp: Path, calib_name: Optional[str]) -> str:
    """The trtexec build of ``plan`` as a run.sh line: the temp paths become $ENGINE_DIR / $HERE."""
    subs = [(str(plan.output), '"$ENGINE_DIR"/model.engine.partial'),
            (str(plan.timing_cache), '"$ENGINE_DIR"/timing.cache'), (str(tmp / "model.onnx"), '"$HERE"/model.onnx')]
    if calib_name:
        subs.append((str(tmp / calib_name), '"$HERE"/' + calib_name))
    argv = trtexec_command(plan, trtexec="TRTEXEC_BIN")
    return _shell_line(argv, subs).replace("TRTEXEC_BIN", '"$TRTEXEC"', 1)


def _trtexec_run_line(plan) -> str:
    """The trtexec benchmark of the built engine as a run.sh line (times exported to results/)."""
    shapes = {s.name: s.opt for s in plan.shapes} if plan.shapes and all(hasattr(s, "opt") for s in plan.shapes) else None
    try:
        argv = benchmark_command(Path("ENGINE_PATH"), plan.trt_version, trtexec="TRTEXEC_BIN", shapes=shapes,
                                 times_json=Path("TIMES_JSON"))
    except TypeError:
        argv = benchmark_command(Path("ENGINE_PATH"), plan.trt_version, trtexec="TRTEXEC_BIN")
    return _shell_line(argv, [("ENGINE_PATH", '"$ENGINE"'), ("TIMES_JSON", '"$HERE"/results/trtexec-times.json'),
                              ("TRTEXEC_BIN", '"$TRTEXEC"')])


def _edgekit_build_line(device: str, precision: str, calib_name: Optional[str]) -> str:
    """The `edgekit build` run.sh runs on the board's first start."""
    args = ["EDGEKIT_BIN", "build", "HERE_MODEL", "--device", device, "-o", "ENGINE_OUT",
            "--precision", precision, "--timing-cache", "TIMING", "--backend", "auto", "--json", "BUILD_JSON"]
    if calib_name:
        args[8:8] = ["--calib-cache", "HERE_CALIB"]
    return _shell_line(args, [("EDGEKIT_BIN", '"$EDGEKIT"'), ("HERE_MODEL", '"$HERE"/model.onnx'),
                              ("ENGINE_OUT", '"$ENGINE"'), ("TIMING", '"$ENGINE_DIR"/timing.cache'),
                              ("BUILD_JSON", '"$ENGINE_DIR"/build.json'), ("HERE_CALIB", '"$HERE"/' + (calib_name or ""))])


def _write_run_script(tmp: Path, model_name: str, prof, plan, precision: str, created: str, backend: str,
                      lines: Dict[str, str]) -> None:
    run_sh = (_RUN_SH.replace("@MODEL@", model_name).replace("@DISPLAY@", prof.display_name)
              .replace("@DEVICE@", prof.name).replace("@PRECISION@", precision).replace("@VERSION@", __version__)
              .replace("@CREATED@", created).replace("@BACKEND@", backend).replace("@TRT@", plan.trt_version)
              .replace("@BUILD_LINE@", lines["build"]).replace("@TRTEXEC_BUILD_LINE@", lines["trtexec_build"])
              .replace("@TRTEXEC_RUN_LINE@", lines["trtexec_run"]))
    (tmp / "run.sh").write_text(run_sh)
    os.chmod(tmp / "run.sh", 0o755)


def _hash_files(root: Path) -> Dict[str, dict]:
    """sha256 and size of every file under ``root``, by relative POSIX path, sorted."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def _model_entry(onnx_model, src: Path, src_sha: str, ext_files: List[str], plan) -> dict:
    """The manifest's ``model`` section."""
    return {"file": "model.onnx", "source": str(src.resolve()), "sha256": src_sha,
            "external_data": ext_files,
            "opset": max((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "inputs": [s.to_dict() for s in model_input_specs(onnx_model)],
            "outputs": [s.to_dict() for s in model_output_specs(onnx_model)],
            "qdq": bool(plan.is_qdq)}


def _move_into_place(tmp: Path, out: Path, force: bool) -> None:
    old = None
    if out.exists() or out.is_symlink():
        if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
            out.rmdir()
        elif force:
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        else:  # pragma: no cover - checked before writing; a race with another writer
            raise InputError(f"output {out} appeared while the bundle was written")
    os.replace(tmp, out)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


# ---- verification -------------------------------------------------------------------------------

def read_manifest(bundle: PathLike) -> dict:
    path = Path(bundle) / MANIFEST
    if not Path(bundle).is_dir():
        raise InputError(f"{bundle} is not a bundle folder")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{bundle} has no {MANIFEST}: not an edgekit bundle") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT or not isinstance(data.get("files"), dict):
        raise InputError(f"{path} is not an edgekit bundle manifest",
                         hint="expected an object with \"format\": \"edgekit-bundle\" and a \"files\" object")
    for rel, meta in data["files"].items():
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str)
                and isinstance(meta.get("bytes"), int) and not isinstance(meta.get("bytes"), bool)):
            raise InputError(f"{path}: the entry for '{rel}' is {json.dumps(meta)[:60]}, not "
                             "{\"sha256\": HEX, \"bytes\": N}",
                             hint="the manifest is damaged: make the bundle again with `edgekit deploy`")
    return data


def verify_bundle(bundle: PathLike) -> VerifyReport:
    """Recompute every file's sha256 against manifest.json. Files under engines/ and results/ (made
    on the board) are ignored; any other file not in the manifest is reported as unexpected."""
    root = Path(bundle)
    manifest = read_manifest(root)
    rep = VerifyReport(path=str(root), ok=True, checked=0)
    listed = manifest["files"]
    for rel, meta in sorted(listed.items()):
        p = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            rep.mismatched.append(rel)
            continue
        if not p.is_file():
            rep.missing.append(rel)
            continue
        rep.checked += 1
        if p.stat().st_size != meta.get("bytes") or sha256_file(p) != meta.get("sha256"):
            rep.mismatched.append(rel)
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if rel in listed or rel in (MANIFEST, CHECKSUMS) or rel.split("/", 1)[0] in RUNTIME_DIRS:
            continue
        rep.unexpected.append(rel)
    sums = root / CHECKSUMS
    if sums.is_file():
        expected = "".join(f"{v['sha256']}  {k}\n" for k, v in listed.items())
        if sums.read_text() != expected:
            rep.mismatched.append(CHECKSUMS)
    else:
        rep.missing.append(CHECKSUMS)
    rep.ok = not (rep.mismatched or rep.missing or rep.unexpected)
    return rep


__all__ = ["BundleReport", "VerifyReport", "create_bundle", "read_manifest", "verify_bundle"]
