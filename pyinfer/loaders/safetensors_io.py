"""A pure-numpy reader and writer for the safetensors format.

File layout (https://github.com/huggingface/safetensors):
    u64 little-endian N | N bytes of JSON header | data section
The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, offsets
relative to the start of the data section; an optional "__metadata__" entry maps str -> str.
Data is little-endian and row-major.

Read dtypes: F32, F16, I8 (returned as such) and BF16 (returned widened to float32: numpy has no
bfloat16, and bf16 is the top half of a float32, so ``u16 << 16`` viewed as f32 is exact); a header
may name any dtype the safetensors library knows, and only reading such a tensor fails.
Everything in the header is checked before any tensor is read, as the library checks it: offsets
within the file, spans matching shape x dtype, and the tensors tiling the data section exactly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

# safetensors dtype name -> (little-endian numpy dtype as stored, itemsize)
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "I8": np.dtype("i1"),
}
# every dtype the safetensors library knows -> bytes per element: a header may name any of them (the
# offsets are checked with it); reading a tensor whose dtype is not in DTYPES is what fails
ITEMSIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
# numpy dtype -> safetensors name, for writing
_WRITE_NAMES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int8): "I8"}
MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit


@dataclass(frozen=True)
class TensorInfo:
    dtype: str                  # safetensors name: "F32", "F16", "BF16", "I8"
    shape: tuple[int, ...]
    begin: int                  # byte offset of the first element, relative to the data section
    end: int                    # one past the last byte

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


class SafetensorsFile:
    """An opened, validated safetensors file. Tensors are read on request with ``get(name)``;
    each read returns an owned array (no file handle or memmap is kept open)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.tensors, self.metadata, self.data_start = read_header(self.path)

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> np.ndarray:
        """The tensor ``name``: float32 for F32 and BF16, float16 for F16, int8 for I8."""
        try:
            info = self.tensors[name]
        except KeyError:
            raise ValueError(f"tensor {name!r} is not in {self.path}") from None
        if info.dtype not in DTYPES:
            raise ValueError(f"tensor {name!r} in {self.path} has dtype {info.dtype}, which pyinfer does not "
                             f"read (supported: {', '.join(DTYPES)})")
        stored = DTYPES[info.dtype]
        count = info.nbytes // stored.itemsize
        with open(self.path, "rb") as f:
            f.seek(self.data_start + info.begin)
            flat = np.fromfile(f, dtype=stored, count=count)   # (count,)
        if flat.size != count:
            raise ValueError(f"tensor {name!r} in {self.path}: file ended early "
                             "(changed while reading?)")
        if info.dtype == "BF16":
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        else:
            flat = flat.astype(stored.newbyteorder("="), copy=False)
        return flat.reshape(info.shape)


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """Parse and validate the header: (tensors by name, metadata, data section start)."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"safetensors file {path} is truncated: {file_size} bytes, "
                             "shorter than the 8-byte header length")
        header_len = int.from_bytes(prefix, "little")
        if header_len > file_size - 8:
            raise ValueError(f"safetensors file {path}: header length {header_len} runs past the "
                             f"end of the file ({file_size} bytes)")
        if header_len > MAX_HEADER_BYTES:
            raise ValueError(f"safetensors file {path}: header length {header_len} exceeds "
                             f"{MAX_HEADER_BYTES}")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"safetensors file {path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"safetensors file {path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"safetensors file {path}: __metadata__ must map str to str")
    data_start = 8 + header_len
    data_size = file_size - data_start
    tensors = {name: _parse_entry(path, name, entry, data_size) for name, entry in header.items()}
    _check_layout(path, tensors, data_size)
    return tensors, metadata, data_start


def _check_layout(path: str, tensors: dict[str, TensorInfo], data_size: int) -> None:
    """As the safetensors library validates: sorted by offset, the tensors tile the data section
    exactly (the first at 0, each where the previous ends: no overlap, no hole, no trailing bytes)."""
    end, prev = 0, None
    for name, info in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.begin != end:
            what = "overlaps" if info.begin < end else f"leaves a hole of {info.begin - end} bytes after"
            raise ValueError(f"safetensors file {path}, tensor {name!r}: data_offsets [{info.begin}, {info.end}] "
                             f"{what} {repr(prev) if prev else 'the start of the data section'}")
        end, prev = info.end, name
    if end != data_size:
        raise ValueError(f"safetensors file {path}: the tensors end at byte {end} of the data section but it "
                         f"holds {data_size} ({data_size - end} trailing bytes)")


def _parse_entry(path: str, name: str, entry, data_size: int) -> TensorInfo:
    where = f"safetensors file {path}, tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise ValueError(f"{where}: entry must have dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in ITEMSIZES:
        raise ValueError(f"{where}: unknown dtype {dtype!r} (safetensors knows {', '.join(ITEMSIZES)})")
    if not (isinstance(shape, list) and all(_is_uint(d) for d in shape)):
        raise ValueError(f"{where}: shape {shape!r} is not a list of non-negative ints")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)):
        raise ValueError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise ValueError(f"{where}: data_offsets [{begin}, {end}] fall outside the data section "
                         f"of {data_size} bytes")
    expected = int(np.prod(shape, dtype=object)) * ITEMSIZES[dtype]
    if end - begin != expected:
        raise ValueError(f"{where}: data_offsets span {end - begin} bytes but shape {shape} of "
                         f"{dtype} needs {expected}")
    return TensorInfo(dtype, tuple(shape), begin, end)


def _is_uint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor in the file, as owned arrays (BF16 widened to float32)."""
    st = SafetensorsFile(path)
    return {name: st.get(name) for name in st.names}


def save_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray],
                     metadata: dict[str, str] | None = None) -> None:
    """Write float32 / float16 / int8 arrays, in the given order, 8-byte aligned data section."""
    header: dict = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, arr in tensors.items():
        if name == "__metadata__":
            raise ValueError("a tensor cannot be named __metadata__")
        if not isinstance(arr, np.ndarray) or arr.dtype not in _WRITE_NAMES:
            raise ValueError(f"tensor {name!r}: cannot write {getattr(arr, 'dtype', type(arr))}; "
                             "supported: float32, float16, int8")
        header[name] = {"dtype": _WRITE_NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)   # pad with spaces so the data section is 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for arr in tensors.values():
            f.write(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())
