"""pyinfer's own checkpoint format: an uncompressed .npz (np.savez) holding

    config              0-d unicode array: json.dumps(ModelConfig.to_dict())
    tok_embeddings, layers.{i}.{attn_norm,wq,...,w3}, norm, output (untied only)   float32

A quantized model (pyinfer.quant) adds ``quant`` (0-d unicode: the format name) and stores each
linear weight and the output head (always, tied or not) as ``NAME.qweight``, ``NAME.scales`` and,
for zero-point formats, ``NAME.zeros``, in QTensor's layout.

Loading never unpickles and checks each member's .npy header (shape, dtype, and the size it implies
against the member's stored size) before allocating anything; members are read to their end, so a
corrupted one fails its CRC; Fortran-ordered arrays are made C-contiguous.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from dataclasses import fields

import numpy as np

from ..config import ModelConfig
from ..quant import LINEAR_WEIGHTS, QTensor, get_format
from ..weights import ModelWeights
from .common import assemble, flatten, tensor_shapes

CONFIG_KEY = "config"


QUANT_KEY = "quant"


def _quant_format(weights: ModelWeights):
    fmts = {w.fmt for w in [weights.output, *(getattr(lw, n) for lw in weights.layers for n in LINEAR_WEIGHTS)]
            if isinstance(w, QTensor)}
    if len(fmts) > 1:
        raise ValueError(f"cannot save a model mixing quantization formats {sorted(f.name for f in fmts)}")
    return fmts.pop() if fmts else None


def save_npz(weights: ModelWeights, path: str | os.PathLike) -> None:
    """np.savez writes to ``path`` exactly when it ends in .npz (else it appends .npz)."""
    fmt = _quant_format(weights)
    flat = flatten(weights)
    if fmt is not None:
        flat["output"] = weights.output
    arrays, extra = {}, {}
    for name, a in flat.items():
        if isinstance(a, QTensor):
            arrays[f"{name}.qweight"], arrays[f"{name}.scales"] = a.qweight, a.scales
            if a.zeros is not None:
                arrays[f"{name}.zeros"] = a.zeros
        else:
            arrays[name] = np.ascontiguousarray(a, dtype=np.float32)
    if fmt is not None:
        extra[QUANT_KEY] = np.array(fmt.name)
    np.savez(path, **{CONFIG_KEY: np.array(json.dumps(weights.config.to_dict()))}, **extra, **arrays)


def _qtensor_shapes(fmt, shape: tuple[int, int]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Stored arrays of a QTensor standing for a float weight of ``shape``."""
    n, k = shape
    g = fmt.group_size
    k_pad = -(-k // g) * g if g else k
    out = {"qweight": ((n, k_pad // 2), np.dtype(np.uint8)) if fmt.weight_bits == 4 else
           ((n, k_pad), np.dtype(np.int8)),
           "scales": (((n, k_pad // g) if g else (n,)), np.dtype(np.float32))}
    if fmt.zero_point:
        out["zeros"] = ((n, k_pad // g), np.dtype(np.uint8))
    return out


def _config_from_json(text: str, path: str) -> ModelConfig:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: config entry is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: config is not a JSON object but {type(d).__name__}")
    known = {f.name for f in fields(ModelConfig)}
    if set(d) - known:
        raise ValueError(f"{path}: config has unknown field(s) {sorted(set(d) - known)}")
    bad = [k for k, v in d.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ValueError(f"{path}: config field(s) {bad} are not finite numbers")
    try:
        return ModelConfig(**d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: config is invalid: {e}") from None


def _read_member(zf: zipfile.ZipFile, member: str, path: str, want: tuple | None = None) -> np.ndarray:
    """One .npy member, read by hand: its header (version, shape, dtype, order) is checked, and the
    data size it implies against the member's stored size, before anything is allocated (a header
    claiming a huge shape is refused, not allocated); the data is read to its end, so zipfile checks
    its CRC. ``want``: (shape, dtype) the caller expects. A Fortran-ordered array comes back
    C-contiguous. Any defect is a ValueError naming the member."""
    name = member + ".npy"
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ValueError(f"tensor {member} is missing from {path}") from None
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ValueError(f"npz member {member} in {path}: .npy format version {version} is not supported")
            shape, fortran_order, dtype = readers[version](f)
            if dtype.hasobject:
                raise ValueError(f"npz member {member} in {path} holds Python objects (never unpickled)")
            if want is not None and (shape != want[0] or dtype != want[1]):
                raise ValueError(f"tensor {member} in {path} is {dtype} {shape}, expected {want[1]} {want[0]}")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if f.tell() + nbytes != info.file_size:
                raise ValueError(f"npz member {member} in {path}: its header ({dtype} {shape}) implies "
                                 f"{f.tell() + nbytes} bytes but the member holds {info.file_size}")
            data = f.read(nbytes)
            if len(data) != nbytes or f.read(1):      # reading to the end checks the CRC
                raise ValueError(f"npz member {member} in {path} ends early")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
        # RuntimeError: "encrypted"; NotImplementedError: an unknown compression method or zip version
        raise ValueError(f"npz member {member} in {path} is corrupt: {type(e).__name__}: {e}") from None
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return np.array(arr, order="C")                   # owned, writable, C-contiguous


def load_npz(path: str | os.PathLike) -> ModelWeights:
    path = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as e:
        raise ValueError(f"{path} is not an npz (zip) file: {type(e).__name__}: {e}") from None
    with zf:
        config_arr = _read_member(zf, CONFIG_KEY, path)
        if config_arr.dtype.kind != "U" or config_arr.ndim != 0:
            raise ValueError(f"{path}: {CONFIG_KEY!r} entry is not a JSON string")
        config = _config_from_json(str(config_arr), path)
        fmt = None
        if QUANT_KEY + ".npy" in zf.namelist():
            quant_arr = _read_member(zf, QUANT_KEY, path)
            if quant_arr.dtype.kind != "U" or quant_arr.ndim != 0:
                raise ValueError(f"{path}: {QUANT_KEY!r} entry is not a format name")
            fmt = get_format(str(quant_arr))
        tensors = {}
        shapes = tensor_shapes(config)
        if fmt is not None:
            shapes["output"] = (config.vocab_size, config.dim)
        for name, shape in shapes.items():
            if fmt is not None and len(shape) == 2 and name != "tok_embeddings":
                parts = {part: _read_member(zf, f"{name}.{part}", path, want)
                         for part, want in _qtensor_shapes(fmt, shape).items()}
                tensors[name] = QTensor(fmt, shape, parts["qweight"], parts["scales"], parts.get("zeros"))
                continue
            tensors[name] = _read_member(zf, name, path, (shape, np.dtype(np.float32)))
    weights = assemble(config, tensors, path)
    if fmt is not None:
        weights.output = tensors["output"]
    return weights
