"""GGUF checkpoints written here with the gguf package's GGUFWriter (and gguf.quants for Q8_0 / Q4_0):
float types load exactly, Q8_0 / Q4_0 stay pyinfer QTensors holding the file's bits, K-quants are
dequantized with a note, everything else is refused by name; the real stories260K converted by
llama.cpp prints llama2.c's greedy text with and without its embedded tokenizer."""
from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import quants  # noqa: E402

from pyinfer.config import ModelConfig  # noqa: E402
from pyinfer.loaders import detect_format, load_checkpoint, read_gguf  # noqa: E402
from pyinfer.loaders.gguf import LAYER_NAMES  # noqa: E402
from pyinfer.model import Model  # noqa: E402
from pyinfer.ops import Ops  # noqa: E402
from pyinfer.quant import QTensor  # noqa: E402
from pyinfer.weights import random_weights  # noqa: E402

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300,
                     max_seq_len=64, tied_embeddings=False, rope_theta=10000.0, name="tiny")


def flat_tensors(weights) -> dict[str, np.ndarray]:
    """llama.cpp tensor name -> our float32 array (q/k already in llama's adjacent-pair order)."""
    out = {"token_embd.weight": weights.tok_embeddings, "output_norm.weight": weights.norm}
    if not weights.config.tied_embeddings:
        out["output.weight"] = weights.output
    for i, lw in enumerate(weights.layers):
        for ours, theirs in LAYER_NAMES.items():
            out[f"blk.{i}.{theirs}.weight"] = getattr(lw, ours)
    return out


def write_gguf(path, weights, types: dict[str, QT] | None = None, meta: dict | None = None,
               extra_tensors: dict | None = None, arch: str = "llama") -> dict[str, np.ndarray]:
    """Write ``weights`` as a GGUF; ``types`` maps tensor names to a non-F32 type. Returns the raw
    arrays written (bytes for quantized types)."""
    c = weights.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(c.max_seq_len)
    w.add_embedding_length(c.dim)
    w.add_block_count(c.n_layers)
    w.add_feed_forward_length(c.hidden_dim)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_rope_dimension_count(c.head_dim)
    for key, value in (meta or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        else:
            w.add_uint32(key, value)
    written = {}
    tensors = dict(flat_tensors(weights), **(extra_tensors or {}))
    for name, arr in tensors.items():
        qtype = (types or {}).get(name, QT.F32)
        data = arr if qtype == QT.F32 else quants.quantize(arr, qtype)
        w.add_tensor(name, data, raw_dtype=None if qtype == QT.F32 else qtype)
        written[name] = data
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


def logits_of(weights, tokens, backend="numpy") -> np.ndarray:
    model = Model(weights, Ops(backend))
    cache = model.new_cache(block_size=8)
    return np.asarray(model.forward(cache.prepare([0], [np.asarray(tokens)]), cache, all_logits=True))   # (T, V)


def test_gguf_is_detected_by_its_magic(tmp_path, rng):
    weights = random_weights(CONFIG, seed=int(rng.integers(1 << 30)))
    write_gguf(tmp_path / "model.bin", weights)                 # a misleading name: the magic decides
    assert detect_format(tmp_path / "model.bin") == "gguf"


@pytest.mark.parametrize("qtype", [QT.F32, QT.F16, QT.BF16])
def test_float_types_load_exactly(tmp_path, rng, qtype):
    weights = random_weights(CONFIG, seed=int(rng.integers(1 << 30)))
    names = [n for n in flat_tensors(weights) if not n.endswith("norm.weight")]
    written = write_gguf(tmp_path / "m.gguf", weights, {n: qtype for n in names})
    loaded = load_checkpoint(tmp_path / "m.gguf")
    assert loaded.config == CONFIG.with_(name=loaded.config.name, norm_eps=loaded.config.norm_eps)
    for name, arr in flat_tensors(loaded).items():
        expect = quants.dequantize(written[name], qtype).reshape(arr.shape) if name in names and qtype != QT.F32 \
            else written[name]
        np.testing.assert_array_equal(arr, expect.astype(np.float32), err_msg=name)
    tokens = [int(t) for t in rng.integers(0, CONFIG.vocab_size, 9)]
    np.testing.assert_array_equal(logits_of(loaded, tokens), logits_of(_float_model(tmp_path / "m.gguf"), tokens))


def _float_model(path):
    from pyinfer.quant import dequantize_weights
    return dequantize_weights(load_checkpoint(path))


@pytest.mark.parametrize("qtype,fmt", [(QT.Q8_0, "int8-g32"), (QT.Q4_0, "int4-g32-a8")])
def test_q8_0_and_q4_0_stay_quantized_bit_for_bit(tmp_path, rng, qtype, fmt):
    config = CONFIG.with_(hidden_dim=80)          # ffn_down rows of 80: not whole blocks, stay F16
    weights = random_weights(config, seed=int(rng.integers(1 << 30)))
    names = [n for n in flat_tensors(weights) if not n.endswith("norm.weight")]
    types = {n: (QT.F16 if n.endswith("ffn_down.weight") else qtype) for n in names}
    written = write_gguf(tmp_path / "q.gguf", weights, types)
    ck = read_gguf(tmp_path / "q.gguf")
    assert ck.quantized and any(qtype.name in n for n in ck.notes)
    loaded = ck.weights
    for i, lw in enumerate(loaded.layers):
        assert not isinstance(lw.w2, QTensor) and lw.w2.dtype == np.float32         # the F16 rows
        for ours in ("wq", "wk", "wv", "wo", "w1", "w3"):
            q = getattr(lw, ours)
            raw = written[f"blk.{i}.{LAYER_NAMES[ours]}.weight"]
            assert isinstance(q, QTensor) and q.fmt.name == fmt
            blocks = raw.reshape(q.shape[0], -1, raw.shape[1] // (q.shape[1] // 32))   # (N, K/32, bytes)
            np.testing.assert_array_equal(q.scales, blocks[:, :, :2].copy().view(np.float16)[:, :, 0])
            assert q.qweight.tobytes() == np.ascontiguousarray(blocks[:, :, 2:]).tobytes()
            np.testing.assert_array_equal(q.dequantize(), quants.dequantize(raw, qtype).reshape(q.shape))
    # the embedding table is dequantized exactly (a row lookup); the head keeps the codes
    np.testing.assert_array_equal(loaded.tok_embeddings, quants.dequantize(written["token_embd.weight"], qtype)
                                  .reshape(loaded.tok_embeddings.shape))
    assert isinstance(loaded.output, QTensor)
    tokens = [int(t) for t in rng.integers(0, config.vocab_size, 7)]
    got, ref = logits_of(loaded, tokens), logits_of(_float_model(tmp_path / "q.gguf"), tokens)
    # W8A8 / W4A8 kernels quantize activations to int8 per 32: close to the dequantized float model
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
    assert np.abs(logits_of(loaded, tokens, "c") - ref).max() <= 0.05 * np.abs(ref).max()


def test_tied_quantized_embedding_is_the_head(tmp_path, rng):
    weights = random_weights(CONFIG.with_(tied_embeddings=True), seed=int(rng.integers(1 << 30)))
    write_gguf(tmp_path / "t.gguf", weights, {"token_embd.weight": QT.Q8_0})
    loaded = load_checkpoint(tmp_path / "t.gguf")
    assert isinstance(loaded.output, QTensor)
    np.testing.assert_array_equal(loaded.output.dequantize(), loaded.tok_embeddings)


def _q6_k_bytes(rng, rows: int, cols: int) -> np.ndarray:
    """Random but well-formed Q6_K blocks (210 bytes per 256 weights, a finite float16 d last)."""
    blocks = rng.integers(0, 256, (rows, cols // 256, 210), dtype=np.uint8)
    d = rng.uniform(1e-4, 1e-3, (rows, cols // 256)).astype(np.float16)
    blocks[:, :, 208:] = d.view(np.uint8).reshape(rows, cols // 256, 2)
    return blocks.reshape(rows, -1)


def test_k_quants_are_dequantized_and_said_so(tmp_path, rng):
    config = CONFIG.with_(dim=256, n_heads=4, hidden_dim=256, head_dim=0)
    weights = random_weights(config, seed=int(rng.integers(1 << 30)))
    raw = _q6_k_bytes(rng, config.vocab_size, config.dim)
    path = tmp_path / "k.gguf"
    w = flat_tensors(weights)
    w.pop("output.weight")
    _write_raw(path, config, w, {"output.weight": (raw, QT.Q6_K)})
    ck = read_gguf(path)
    assert any("Q6_K" in n and "dequantized to float32" in n for n in ck.notes)
    np.testing.assert_array_equal(ck.weights.output, quants.dequantize(raw, QT.Q6_K).reshape(config.vocab_size, -1))


def _write_raw(path, config, float_tensors: dict, raw_tensors: dict, meta: dict | None = None,
               arch: str = "llama") -> None:
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in (("context_length", config.max_seq_len), ("embedding_length", config.dim),
                       ("block_count", config.n_layers), ("feed_forward_length", config.hidden_dim),
                       ("attention.head_count", config.n_heads), ("attention.head_count_kv", config.n_kv_heads)):
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", config.norm_eps)
    for key, value in (meta or {}).items():
        (w.add_string if isinstance(value, str) else w.add_uint32)(key, value)
    for name, arr in float_tensors.items():
        w.add_tensor(name, arr)
    for name, (arr, qtype) in raw_tensors.items():
        w.add_tensor(name, arr, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("case,message", [
    ("type", "has type Q5_0, which pyinfer does not handle"),
    ("scaling", "llama.rope.scaling.type = 'yarn' is not modelled"),
    ("softcap", "GGUF key llama.attn_logit_softcapping"),
    ("experts", "llama.expert_count = 8: mixture-of-experts"),
    ("tensor", "GGUF tensor(s) not modelled by pyinfer for llama: rope_freqs.weight"),
    ("arch", "GGUF architecture 'gemma' is not supported"),
    ("partial_rope", "partial RoPE is not supported"),
])
def test_refusals_name_what_is_not_modelled(tmp_path, rng, case, message):
    weights = random_weights(CONFIG, seed=int(rng.integers(1 << 30)))
    path = tmp_path / "bad.gguf"
    if case == "type":
        write_gguf(path, weights, {"blk.0.attn_q.weight": QT.Q5_0})
    elif case == "scaling":
        write_gguf(path, weights, meta={"llama.rope.scaling.type": "yarn"})
    elif case == "softcap":
        write_gguf(path, weights, meta={"llama.attn_logit_softcapping": 30.0})
    elif case == "experts":
        write_gguf(path, weights, meta={"llama.expert_count": 8})
    elif case == "tensor":
        write_gguf(path, weights, extra_tensors={"rope_freqs.weight": np.ones(8, np.float32)})
    elif case == "arch":
        tensors = flat_tensors(weights)
        _write_raw(path, CONFIG, tensors, {}, arch="gemma")
    elif case == "partial_rope":
        _write_raw(path, CONFIG, flat_tensors(weights), {}, meta={"llama.rope.dimension_count": 8})
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_gguf(path)


def test_quant_on_a_quantized_gguf_is_refused(tmp_path, rng, capsys):
    from pyinfer.cli import main
    weights = random_weights(CONFIG, seed=int(rng.integers(1 << 30)))
    write_gguf(tmp_path / "q.gguf", weights, {"blk.0.attn_q.weight": QT.Q8_0}, meta=_byte_vocab_meta(300))
    code = main(["generate", "--model", str(tmp_path / "q.gguf"), "--quant", "int8", "--steps", "4"])
    assert code == 2 and "already quantized" in capsys.readouterr().err


def _byte_vocab_meta(n: int) -> dict:
    """An embedded llama (SentencePiece-style) vocabulary: <unk>, <s>, </s>, 256 byte tokens, letters."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [chr(ord("a") + i % 26) * (1 + i // 26) for i in range(n - len(tokens))]
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.0] * len(tokens),
            "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259),
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}


def test_embedded_tokenizer_must_fit_the_model(tmp_path, rng):
    from pyinfer.api import load
    weights = random_weights(CONFIG, seed=int(rng.integers(1 << 30)))
    write_gguf(tmp_path / "v.gguf", weights, meta=_byte_vocab_meta(CONFIG.vocab_size + 5))
    with pytest.raises(ValueError, match=f"tokenizer has {CONFIG.vocab_size + 5} tokens but the model's "
                                         f"vocab_size is {CONFIG.vocab_size}"):
        load(str(tmp_path / "v.gguf"))
    write_gguf(tmp_path / "ok.gguf", weights, meta=_byte_vocab_meta(CONFIG.vocab_size - 20))   # padded rows
    assert load(str(tmp_path / "ok.gguf")).tokenizer.vocab_size == CONFIG.vocab_size - 20


@pytest.fixture
def stories_gguf(stories260k):
    path = stories260k["model"].parent / "stories260K-f32.gguf"
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path


@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_stories260k_gguf_prints_llama2c_text(capsys, stories260k, stories_gguf, with_tokenizer):
    from pyinfer.cli import main
    argv = ["generate", "--model", str(stories_gguf), "--temperature", "0", "--steps", "256",
            "--prompt", "Once upon a time"]
    if with_tokenizer:
        argv += ["--tokenizer", str(stories260k["tokenizer"])]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.rstrip() == stories260k["greedy"].read_text().rstrip()


def test_stories260k_gguf_equals_the_llama2c_checkpoint(stories260k, stories_gguf, rng):
    a, b = load_checkpoint(stories260k["model"]), load_checkpoint(stories_gguf)
    tokens = [1] + [int(t) for t in rng.integers(3, 512, 20)]
    np.testing.assert_allclose(logits_of(b, tokens), logits_of(a, tokens), rtol=1e-5, atol=1e-5)


def test_embedded_vocab_encodes_as_run_c(stories260k, stories_gguf, rng):
    from pyinfer.tokenization import load_tokenizer_file
    from pyinfer.tokenizer import Llama2cTokenizer
    ours, ref = load_tokenizer_file(stories_gguf, 512), Llama2cTokenizer.from_file(stories260k["tokenizer"], 512)
    alphabet = list("abcdefghij ABC\n\t0123.,!'é日🙂")
    for text in ["Once upon a time", "", "  two  spaces", "naïve 日本 🙂", "1234567"] + [
            "".join(alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(1, 40)))) for _ in range(20)]:
        ids = ref.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == ref.decode(ids)
    assert (ours.bos_id, ours.eos_id, ours.stop_ids) == (1, 2, (2,))
