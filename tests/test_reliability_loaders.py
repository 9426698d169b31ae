"""Loaders refuse what they cannot read exactly (issue #12 D8, D11, D17, D18, D19 for npz, D20): a
corrupted npz member fails its CRC, a header claiming more bytes than its member holds is refused
before anything is allocated, Fortran-ordered arrays load C-contiguous, non-finite weights and
config values are refused (with an opt-out for weights), and safetensors offsets are checked as the
safetensors library checks them (the library is the oracle)."""
from __future__ import annotations

import io
import json
import struct
import time
import zipfile

import numpy as np
import pytest

from pyinfer.config import ModelConfig
from pyinfer.loaders import load_checkpoint, load_npz, save_npz
from pyinfer.loaders.safetensors_io import SafetensorsFile
from pyinfer.weights import random_weights

CFG = ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=24, vocab_size=32, max_seq_len=16)


def rewrite_npz(src, dst, change):
    """Copy an npz, passing each member's (name, bytes) through change() (None drops it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)


def npy_bytes(arr, fortran=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asfortranarray(arr) if fortran else arr, allow_pickle=False)
    return buf.getvalue()


@pytest.fixture
def npz(tmp_path, seed):
    path = tmp_path / "m.npz"
    save_npz(random_weights(CFG, seed=seed), path)
    return path


def test_corrupted_npz_member_fails_its_crc(npz, tmp_path, rng):
    raw = bytearray(npz.read_bytes())
    with zipfile.ZipFile(npz) as zf:
        info = zf.getinfo("layers.0.wq.npy")
    at = info.header_offset + 30 + len(info.filename) + int(rng.integers(200, info.file_size))
    raw[at] ^= 0x10                                           # one bit of the stored data
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt|CRC"):
        load_npz(bad)


def test_npz_header_claiming_more_than_its_member_is_refused_before_allocation(tmp_path):
    big = CFG.with_(vocab_size=1 << 20, dim=4096, n_heads=32, n_kv_heads=32, hidden_dim=64)   # 16 GiB embedding
    config = np.array(json.dumps(big.to_dict()))
    buf = io.BytesIO()                                        # a header alone, then 64 bytes of data
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 4096)})
    header = buf.getvalue() + bytes(64)
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.npy", npy_bytes(config))
        zf.writestr("tok_embeddings.npy", header)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="implies"):
        load_npz(path)
    assert time.perf_counter() - t0 < 5


def test_fortran_ordered_npz_arrays_load_c_contiguous(npz, tmp_path):
    want = load_npz(npz)
    path = tmp_path / "f.npz"
    rewrite_npz(npz, path, lambda name, data: npy_bytes(np.load(io.BytesIO(data)), fortran=True)
                if name == "layers.0.wq.npy" else data)
    got = load_npz(path)
    assert got.layers[0].wq.flags.c_contiguous
    np.testing.assert_array_equal(got.layers[0].wq, want.layers[0].wq)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_weights_are_refused_unless_allowed(tmp_path, seed, value):
    w = random_weights(CFG, seed=seed)
    w.layers[0].w2[3, 5] = value
    path = tmp_path / "m.npz"
    save_npz(w, path)
    with pytest.raises(ValueError, match="layers.0.w2.*allow_nonfinite"):
        load_checkpoint(path)
    assert np.isnan(load_checkpoint(path, allow_nonfinite=True).layers[0].w2[3, 5]) == np.isnan(value)


@pytest.mark.parametrize("field,text", [("rope_theta", "Infinity"), ("norm_eps", "1e400"), ("rope_theta", "NaN")])
def test_nonfinite_npz_config_values_are_refused(npz, tmp_path, field, text):
    def change(name, data):
        if name != "config.npy":
            return data
        d = json.loads(str(np.load(io.BytesIO(data))))
        d[field] = 1.5
        return npy_bytes(np.array(json.dumps(d).replace("1.5", text)))
    path = tmp_path / "c.npz"
    rewrite_npz(npz, path, change)
    with pytest.raises(ValueError, match=field):
        load_npz(path)


def write_safetensors(path, entries, data: bytes):
    raw = json.dumps(entries).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


LAYOUTS = {
    "ok": ({"a": ("F32", [2], [0, 8]), "b": ("F32", [1], [8, 12])}, 12),
    "overlap": ({"a": ("F32", [2], [0, 8]), "b": ("F32", [1], [4, 8])}, 8),
    "hole": ({"a": ("F32", [1], [0, 4]), "b": ("F32", [1], [8, 12])}, 12),
    "trailing": ({"a": ("F32", [1], [0, 4])}, 8),
    "late start": ({"a": ("F32", [1], [4, 8])}, 8),
    "unused I64": ({"a": ("F32", [1], [0, 4]), "i": ("I64", [1], [4, 12])}, 12),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_safetensors_offsets_checked_as_the_library_checks_them(tmp_path, layout):
    from safetensors.numpy import load_file
    entries, size = LAYOUTS[layout]
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {k: {"dtype": d, "shape": s, "data_offsets": o} for k, (d, s, o) in entries.items()},
                      bytes(range(size)))
    try:
        load_file(str(path))
        library_ok = True
    except Exception:                                   # the library's own error types
        library_ok = False
    try:
        st = SafetensorsFile(path)
        ours_ok = True
    except ValueError:
        ours_ok = False
    assert ours_ok == library_ok, (layout, ours_ok, library_ok)
    if ours_ok and "i" in entries:                      # an unread tensor of a dtype we do not read is fine
        np.testing.assert_array_equal(st.get("a"), np.frombuffer(bytes(range(4)), "<f4"))
        with pytest.raises(ValueError, match="I64"):
            st.get("i")


@pytest.mark.parametrize("backend", ["numpy", "c", "numba"])
def test_a_nan_weight_loaded_for_inspection_fails_the_same_on_every_backend(tmp_path, seed, backend, stories260k):
    """D10/D11: one NaN weight used to print plausible text on C and <unk> on numpy. Refused at load;
    loaded anyway, every backend's sampler raises the same NonFiniteLogitsError at the first token."""
    from pyinfer.api import load
    from pyinfer.sampling import NonFiniteLogitsError
    w = random_weights(CFG.with_(vocab_size=512), seed=seed)
    w.layers[0].w2[3, 5] = np.nan
    path = tmp_path / "m.npz"
    save_npz(w, path)
    tok = stories260k["tokenizer"]                                  # tok512.bin: 512 tokens
    with pytest.raises(ValueError, match="allow_nonfinite"):
        load(path, tokenizer=tok, backend=backend)
    gen = load(path, tokenizer=tok, backend=backend, allow_nonfinite=True)
    with pytest.raises(NonFiniteLogitsError, match="NaN"):
        gen.generate("Once", steps=4)
