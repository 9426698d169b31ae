"""Checkpoint loaders: round trips for every format, independent cross-checks (the safetensors
package, a numpy Q8_0, an HF-style rotate-half RoPE), the real stories260K.bin, malformed files."""
from __future__ import annotations

import json
import os
import shutil
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pyinfer.config import ModelConfig
from pyinfer.loaders import (FORMATS, detect_format, load_checkpoint, load_hf, load_safetensors,
                             quantize_q80, read_v1, read_v2_q80, save_checkpoint, save_hf,
                             save_safetensors, write_v2)
from pyinfer.loaders.common import flatten
from pyinfer.weights import random_weights

STORIES = Path(__file__).resolve().parents[1].parent / "shared/models/stories260K.bin"
STORIES_BYTES = 1056540

CONFIGS = {
    # tied, GQA (2 query heads per kv head), hidden_dim not a multiple of 32
    "tied-gqa": ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=72,
                            vocab_size=40, max_seq_len=16, tied_embeddings=True),
    # untied, GQA 3:1, dim 48 (v2 group size backs off 64 -> 32 -> 16)
    "untied-gqa": ModelConfig(dim=48, n_layers=3, n_heads=6, n_kv_heads=2, hidden_dim=100,
                              vocab_size=37, max_seq_len=24, tied_embeddings=False),
    # untied, plain multi-head attention
    "untied-mha": ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=40,
                              vocab_size=11, max_seq_len=8, tied_embeddings=False),
}


def _path(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / {"npz": "m.npz", "hf": "hf_dir"}.get(fmt, f"m.{fmt}.bin")


def _assert_same_config(a: ModelConfig, b: ModelConfig) -> None:
    assert a.with_(name="x") == b.with_(name="x")


def _assert_equal_weights(a, b) -> None:
    _assert_same_config(a.config, b.config)
    fa, fb = flatten(a), flatten(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        assert fb[name].dtype == np.float32 and fb[name].flags.c_contiguous, name
        np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)
    assert (b.output is b.tok_embeddings) == b.config.tied_embeddings


# ---- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["legacy", "v1", "hf", "npz"])
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_float_round_trip_is_exact(tmp_path, fmt, cfg):
    w = random_weights(CONFIGS[cfg], seed=7)
    path = _path(tmp_path, fmt)
    save_checkpoint(w, path, fmt)
    assert detect_format(path) == fmt
    _assert_equal_weights(w, load_checkpoint(path))


def _numpy_q80(w: np.ndarray, group_size: int) -> np.ndarray:
    """Independent Q8_0 (export.py quantize_q80), returning the dequantized float32 values."""
    g = w.astype(np.float32).reshape(-1, group_size)
    scale = (np.max(np.abs(g), axis=1) / np.float32(127.0)).astype(np.float32)[:, None]
    q = np.rint(g / scale).astype(np.int8)
    return (q.astype(np.float32) * scale).reshape(w.shape)


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_v2_matches_numpy_q80_and_error_is_bounded(tmp_path, cfg):
    config = CONFIGS[cfg]
    w = random_weights(config, seed=3)
    path = tmp_path / "m.bin"
    group_size = write_v2(w, path, group_size=64)
    assert config.dim % group_size == 0 and group_size == {32: 32, 48: 16, 16: 16}[config.dim]
    raw = path.read_bytes()
    assert struct.unpack_from("<Ii", raw) == (0x616B3432, 2)
    assert struct.unpack_from("<i", raw, 37)[0] == group_size     # unaligned, right after the flag
    assert len(raw) - 256 == sum(
        a.nbytes if name.endswith("norm") else a.size + 4 * (a.size // group_size)
        for name, a in flatten(w).items())
    q80 = read_v2_q80(path)
    assert q80.group_size == group_size
    back = load_checkpoint(path)
    _assert_same_config(config, back.config)
    for name, orig in flatten(w).items():
        got = flatten(back)[name]
        if name.endswith("norm"):                   # norms stay float32
            np.testing.assert_array_equal(got, orig, err_msg=name)
            continue
        q, scales = q80.quantized[name]
        assert q.dtype == np.int8 and q.shape == orig.shape
        assert scales.shape == (orig.size // group_size,) and scales.dtype == np.float32
        np.testing.assert_array_equal(got, _numpy_q80(orig, group_size), err_msg=name)
        err = np.abs(got - orig).reshape(-1, group_size).max(axis=1)
        assert np.all(err <= scales * 0.5 * (1 + 1e-5) + 1e-12), name
    assert (back.output is back.tok_embeddings) == config.tied_embeddings


def test_q80_zero_group_and_rounding():
    w = np.array([[0, 0, 0, 0], [1.0, -0.5, 0.25, 127 / 254]], dtype=np.float32)   # (2, 4)
    q, scales = quantize_q80(w, 4)
    np.testing.assert_array_equal(scales, np.float32([0, 1 / 127]))
    np.testing.assert_array_equal(q, [[0, 0, 0, 0], [127, -64, 32, 64]])  # -63.5 -> -64 (to even)


@pytest.mark.parametrize("cfg", ["tied-gqa", "untied-gqa"])
def test_hf_sharded_round_trip(tmp_path, cfg):
    w = random_weights(CONFIGS[cfg], seed=11)
    out = tmp_path / "hf"
    save_hf(w, out, shard_max_bytes=4096)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and not (out / "model.safetensors").exists()
    assert shards == sorted(p.name for p in out.glob("model-*-of-*.safetensors"))
    assert ("lm_head.weight" in index["weight_map"]) != CONFIGS[cfg].tied_embeddings
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in flatten(w).values())
    for target in [out, out / "config.json", out / "model.safetensors.index.json", out / shards[0]]:
        assert detect_format(target) == "hf"
        _assert_equal_weights(w, load_checkpoint(target))


def test_hf_loads_half_precision_tensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    w = random_weights(CONFIGS["untied-mha"], seed=5)
    save_hf(w, tmp_path)
    tensors = safetensors_numpy.load_file(str(tmp_path / "model.safetensors"))
    safetensors_numpy.save_file({k: v.astype(np.float16) for k, v in tensors.items()},
                                str(tmp_path / "model.safetensors"))
    back = load_hf(tmp_path)
    for name, a in flatten(w).items():
        np.testing.assert_allclose(flatten(back)[name], a, rtol=1e-3, atol=1e-4, err_msg=name)


# ---- safetensors against the reference package -------------------------------------------------

def test_safetensors_cross_check(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 5), dtype=np.float32),
               "b.half": rng.standard_normal(7).astype(np.float16),
               "c": rng.integers(-128, 128, (2, 2, 3)).astype(np.int8),
               "scalar": np.array(1.5, dtype=np.float32), "empty": np.zeros((0, 4), np.float32)}
    ours = tmp_path / "ours.safetensors"
    save_safetensors(ours, tensors, metadata={"format": "pt"})
    theirs = st_numpy.load_file(str(ours))
    assert theirs.keys() == tensors.keys()
    for k in tensors:
        assert theirs[k].dtype == tensors[k].dtype
        np.testing.assert_array_equal(theirs[k], tensors[k])
    ref = tmp_path / "ref.safetensors"
    st_numpy.save_file(tensors, str(ref), metadata={"k": "v"})
    back = load_safetensors(ref)
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype and back[k].shape == tensors[k].shape
        np.testing.assert_array_equal(back[k], tensors[k])


def test_safetensors_reads_bf16_from_torch(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    t = torch.randn(4, 6, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    st_torch.save_file({"w": t}, str(tmp_path / "bf16.safetensors"))
    back = load_safetensors(tmp_path / "bf16.safetensors")["w"]
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, t.float().numpy())


# ---- the HF q/k permutation is the right one --------------------------------------------------

def _rope_adjacent(x, pos, theta=10000.0):
    """llama2.c: rotate pairs (x[2i], x[2i+1]) by pos * theta^(-2i/hd). x: (T, H, hd)."""
    hd = x.shape[-1]
    ang = pos[:, None] * theta ** (-np.arange(0, hd, 2) / hd)            # (T, hd/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]          # (T, 1, hd/2)
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
    out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
    return out


def _rope_rotate_half(x, pos, theta=10000.0):
    """HF transformers: q * cos + rotate_half(q) * sin, frequencies repeated over two halves."""
    hd = x.shape[-1]
    freqs = pos[:, None] * theta ** (-np.arange(0, hd, 2) / hd)          # (T, hd/2)
    emb = np.concatenate([freqs, freqs], axis=-1)[:, None, :]           # (T, 1, hd)
    rotated = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], axis=-1)
    return x * np.cos(emb) + rotated * np.sin(emb)


def _hf_permute_reference(w, n_heads):
    """convert_llama_weights_to_hf.py's permute, written with torch as the script does."""
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(w)
    dim1, dim2 = t.shape
    permuted = t.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)
    return permuted.numpy()


def test_hf_permutation_turns_rotate_half_into_adjacent_pairs(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    config = CONFIGS["untied-gqa"]
    w = random_weights(config, seed=2)
    save_hf(w, tmp_path)
    hf = st_numpy.load_file(str(tmp_path / "model.safetensors"))
    wq_hf = hf["model.layers.1.self_attn.q_proj.weight"]                 # (H*hd, dim)
    wk_hf = hf["model.layers.1.self_attn.k_proj.weight"]                 # (KV*hd, dim)
    np.testing.assert_array_equal(wq_hf, _hf_permute_reference(w.layers[1].wq, config.n_heads))
    np.testing.assert_array_equal(wk_hf, _hf_permute_reference(w.layers[1].wk, config.n_kv_heads))

    T, H, KV, hd = 5, config.n_heads, config.n_kv_heads, config.head_dim
    x = np.random.default_rng(1).standard_normal((T, config.dim))         # (T, dim) float64
    pos = np.arange(3, 3 + T, dtype=np.float64)
    q_hf = _rope_rotate_half((x @ wq_hf.T).reshape(T, H, hd), pos)
    k_hf = _rope_rotate_half((x @ wk_hf.T).reshape(T, KV, hd), pos)
    q_ours = _rope_adjacent((x @ w.layers[1].wq.T).reshape(T, H, hd), pos)
    k_ours = _rope_adjacent((x @ w.layers[1].wk.T).reshape(T, KV, hd), pos)

    def back_to_ours(y):     # HF feature j*half + i is our feature 2i + j
        return y.reshape(*y.shape[:-1], 2, hd // 2).swapaxes(-1, -2).reshape(y.shape)

    np.testing.assert_allclose(back_to_ours(q_hf), q_ours, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(back_to_ours(k_hf), k_ours, rtol=1e-10, atol=1e-10)
    group = H // KV                                  # GQA: query head h uses kv head h // group
    scores_hf = np.einsum("thd,shd->hts", q_hf, np.repeat(k_hf, group, axis=1))
    scores_ours = np.einsum("thd,shd->hts", q_ours, np.repeat(k_ours, group, axis=1))
    np.testing.assert_allclose(scores_hf, scores_ours, rtol=1e-10, atol=1e-10)
    # and the un-permuted weights would be wrong: the check above is not vacuous
    q_wrong = _rope_adjacent((x @ wq_hf.T).reshape(T, H, hd), pos)
    assert not np.allclose(back_to_ours(q_hf), back_to_ours(q_wrong))


# ---- the real model ----------------------------------------------------------------------------

def _stories():
    if not STORIES.exists():
        pytest.skip(f"real model {STORIES} is absent (expected in ../shared/models)")
    return STORIES


def test_stories260k_loads():
    w = load_checkpoint(_stories())
    c = w.config
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size) == (64, 5, 8, 4, 512)
    assert (c.hidden_dim, c.max_seq_len, c.head_dim, c.tied_embeddings) == (172, 512, 8, True)
    assert detect_format(STORIES) == "legacy" and w.output is w.tok_embeddings
    raw = np.fromfile(STORIES, dtype="<f4", offset=28)
    np.testing.assert_array_equal(w.tok_embeddings.ravel(), raw[: 512 * 64])
    assert np.all(np.isfinite(flatten(w)["layers.4.w2"]))


def test_stories260k_legacy_rewrite_is_byte_identical_but_for_freq_cis(tmp_path):
    w = load_checkpoint(_stories())
    save_checkpoint(w, tmp_path / "copy.bin", "legacy")
    a, b = STORIES.read_bytes(), (tmp_path / "copy.bin").read_bytes()
    freq_start = 28 + 4 * (512 * 64 + 5 * w.config.layer_params() + 64)
    freq_end = freq_start + 2 * 4 * 512 * 4
    assert len(a) == len(b) == STORIES_BYTES and freq_end == len(a)
    assert a[:freq_start] == b[:freq_start]
    np.testing.assert_allclose(np.frombuffer(b[freq_start:], "<f4"),
                               np.frombuffer(a[freq_start:], "<f4"), atol=1e-6)


# ---- malformed files: a clear ValueError, before any large allocation --------------------------

def _assert_small_alloc(fn, match, limit=8 << 20):
    """fn raises ValueError(match) with under ``limit`` bytes traced (the header bounds allow
    1024 layers, so a per-tensor table of names may cost a few MB; weights would cost GBs)."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak {peak} bytes traced while rejecting a bad file"


def test_truncated_and_trailing_stories(tmp_path):
    data = _stories().read_bytes()
    short = tmp_path / "short.bin"
    short.write_bytes(data[:-100])
    _assert_small_alloc(lambda: load_checkpoint(short),
                        f"checkpoint .*short.bin is truncated: header implies {STORIES_BYTES} "
                        f"bytes, file has {STORIES_BYTES - 100}")
    long = tmp_path / "long.bin"
    long.write_bytes(data + b"\0" * 8)
    _assert_small_alloc(lambda: load_checkpoint(long), "8 trailing bytes")
    tiny = tmp_path / "tiny.bin"
    tiny.write_bytes(data[:12])
    _assert_small_alloc(lambda: load_checkpoint(tiny), "truncated")


@pytest.mark.parametrize("header, match", [
    ((64, 172, 10**9, 8, 4, 512, 512), "n_layers=1000000000 is outside"),
    ((-64, 172, 5, 8, 4, 512, 512), "dim=-64 is outside"),
    ((64, 172, 5, 8, 3, 512, 512), "n_heads=8 is not a multiple of n_kv_heads=3"),
    ((65536, 1 << 20, 1024, 256, 256, 1 << 21, 1 << 21), "truncated: header implies"),
])
def test_absurd_legacy_header(tmp_path, header, match):
    path = tmp_path / "bad.bin"
    path.write_bytes(struct.pack("<7i", *header) + b"\0" * 4096)
    _assert_small_alloc(lambda: load_checkpoint(path), match)


def test_absurd_v1_header(tmp_path):
    path = tmp_path / "bad.bin"
    head = struct.pack("<Ii7iB", 0x616B3432, 1, 64, 172, 10**9, 8, 4, 512, 512, 1)
    path.write_bytes(head + b"\0" * (256 - len(head)))
    _assert_small_alloc(lambda: load_checkpoint(path), "n_layers=1000000000")
    path.write_bytes(struct.pack("<Ii", 0x616B3432, 3) + b"\0" * 248)
    with pytest.raises(ValueError, match="version 3 is not supported"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="is not llama2.c v1: magic 0x40"):
        read_v1(_stories())        # a legacy file (dim=64 first) read as v1


@pytest.mark.parametrize("group_size", [0, -4, 48])
def test_v2_bad_group_size(tmp_path, group_size):
    path = tmp_path / "m.bin"
    write_v2(random_weights(CONFIGS["tied-gqa"], seed=0), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<i", raw, 37, group_size)
    path.write_bytes(bytes(raw))
    _assert_small_alloc(lambda: load_checkpoint(path),
                        f"group_size={group_size} must be >= 1 and divide dim=32")


def test_bad_safetensors(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    _assert_small_alloc(lambda: load_safetensors(path), "header length 1000000 runs past the end")

    def write(header: dict, data: bytes = b"\0" * 16):
        raw = json.dumps(header).encode()
        path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)

    write({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}})      # 12 bytes no tensor holds
    with pytest.raises(ValueError, match="12 trailing bytes"):
        load_safetensors(path)
    write({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4)
    with pytest.raises(ValueError, match="tensor 'w' .* has dtype F8_E4M3, which pyinfer does not read"):
        load_safetensors(path)                  # a dtype safetensors knows: refused only when read
    write({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}})
    with pytest.raises(ValueError, match="span 16 bytes but shape \\[2, 3\\] of F32 needs 24"):
        load_safetensors(path)
    write({"w": {"dtype": "F32", "shape": [10**6], "data_offsets": [0, 4 * 10**6]}})
    _assert_small_alloc(lambda: load_safetensors(path), "outside the data section of 16 bytes")


def test_hf_missing_tensor_wrong_shape_missing_field(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    save_hf(random_weights(CONFIGS["untied-gqa"], seed=1), tmp_path)
    file = str(tmp_path / "model.safetensors")
    tensors = st_numpy.load_file(file)
    dropped = "model.layers.2.mlp.up_proj.weight"
    st_numpy.save_file({k: v for k, v in tensors.items() if k != dropped}, file)
    with pytest.raises(ValueError, match="tensor model.layers.2.mlp.up_proj.weight is missing"):
        load_hf(tmp_path)
    tensors["lm_head.weight"] = tensors["lm_head.weight"][:-1]
    st_numpy.save_file(tensors, file)
    with pytest.raises(ValueError, match=r"tensor lm_head.weight has shape \(36, 48\)"):
        load_hf(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["rms_norm_eps"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json is missing required field.*rms_norm_eps"):
        load_checkpoint(tmp_path / "config.json")


def test_npz_missing_tensor_and_bad_config(tmp_path):
    w = random_weights(CONFIGS["tied-gqa"], seed=4)
    arrays = {k: v for k, v in flatten(w).items() if k != "layers.1.wo"}
    path = tmp_path / "m.npz"
    np.savez(path, config=np.array(json.dumps(w.config.to_dict())), **arrays)
    with pytest.raises(ValueError, match="tensor layers.1.wo is missing"):
        load_checkpoint(path)
    np.savez(path, config=np.array(json.dumps({**w.config.to_dict(), "n_layers": 10**9})), **arrays)
    _assert_small_alloc(lambda: load_checkpoint(path), "n_layers=1000000000")


def test_writers_refuse_what_the_format_cannot_hold(tmp_path):
    base = CONFIGS["tied-gqa"]
    for changed, match in [(base.with_(rope_theta=500000.0), "rope_theta=10000"),
                           (base.with_(head_dim=16), "head_dim == dim / n_heads")]:
        w = random_weights(changed, seed=0)
        for fmt in ["legacy", "v1", "v2"]:
            with pytest.raises(ValueError, match=match):
                save_checkpoint(w, tmp_path / "x.bin", fmt)
        save_checkpoint(w, tmp_path / "ok.npz", "npz")       # npz and hf keep the full config
        _assert_equal_weights(w, load_checkpoint(tmp_path / "ok.npz"))
        shutil.rmtree(tmp_path / "hf", ignore_errors=True)
        save_checkpoint(w, tmp_path / "hf", "hf")
        _assert_equal_weights(w, load_checkpoint(tmp_path / "hf"))
    with pytest.raises(ValueError, match="unknown checkpoint format 'gguf'"):
        save_checkpoint(random_weights(base, seed=0), tmp_path / "x", "gguf")
    assert set(FORMATS) == {"legacy", "v1", "v2", "hf", "npz"}
    assert not os.path.exists(tmp_path / "x")
