"""The tokenizer a GGUF embeds: a BPE (``gpt2``) vocabulary written from a tokenizer.json trained here
encodes as the ``tokenizers`` library does on that file; unsupported models, pre-tokenizers and keys
are refused by name."""
from __future__ import annotations

import json

import pytest

gguf = pytest.importorskip("gguf")
tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

from pyinfer.tokenization import load_tokenizer_file  # noqa: E402
from pyinfer.tokenization.gguf_vocab import BPE_PRE_REGEX  # noqa: E402

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
CORPUS = ["Once upon a time there was a little cat named Tom.", "The year 2024 had 366 days, not 365!",
          "naïve café — 日本語 🙂", "   spaces    and\ttabs\n\nnewlines  ", "don't won't I'm you're"]


def trained(pre: str) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(BPE_PRE_REGEX[pre]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def write_vocab_gguf(path, tok: Tokenizer, pre: str, add_bos: bool, **extra) -> None:
    model = json.loads(tok.to_str())["model"]
    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", pre)
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.token_type", [3 if t in SPECIALS else 1 for t in tokens])
    w.add_array("tokenizer.ggml.merges", merges)
    w.add_uint32("tokenizer.ggml.bos_token_id", vocab["<|begin_of_text|>"])
    w.add_uint32("tokenizer.ggml.eos_token_id", vocab["<|end_of_text|>"])
    w.add_uint32("tokenizer.ggml.eot_token_id", vocab["<|eot_id|>"])
    w.add_bool("tokenizer.ggml.add_bos_token", add_bos)
    for key, value in extra.items():
        w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def texts(rng) -> list[str]:
    alphabet = list("abc XYZ 0123456\n\t.,!'é日🙂") + SPECIALS
    fixed = ["Once upon a time", "", "  two  spaces  ", "12345678 9", "don't STOP", "naïve 日本語 🙂🚀",
             "a<|eot_id|>b<|begin_of_text|>", "\n\n\n  \t"]
    return fixed + ["".join(alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(1, 40))))
                    for _ in range(20)]


@pytest.mark.parametrize("pre", sorted(BPE_PRE_REGEX))
def test_gguf_bpe_vocab_encodes_as_tokenizers(tmp_path, rng, pre):
    tok = trained(pre)
    write_vocab_gguf(tmp_path / "v.gguf", tok, pre, add_bos=True)
    ours = load_tokenizer_file(tmp_path / "v.gguf", 1000)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    for text in texts(rng):
        ids = tok.encode(text).ids
        assert ours.encode(text) == ids, text
        assert ours.encode(text, bos=False) == tok.encode(text, add_special_tokens=False).ids
        assert ours.decode(ids) == tok.decode(ids, skip_special_tokens=False)
    assert set(ours.stop_ids) == {tok.token_to_id("<|end_of_text|>"), tok.token_to_id("<|eot_id|>")}


def test_gguf_tokenizer_refusals(tmp_path):
    tok = trained("qwen2")
    write_vocab_gguf(tmp_path / "a.gguf", tok, "falcon", add_bos=False)
    with pytest.raises(ValueError, match="BPE pre-tokenizer 'falcon' is not supported"):
        load_tokenizer_file(tmp_path / "a.gguf", 1000)
    w = gguf.GGUFWriter(str(tmp_path / "c.gguf"), "llama")
    w.add_string("tokenizer.ggml.model", "t5")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="GGUF tokenizer model 't5' is not supported"):
        load_tokenizer_file(tmp_path / "c.gguf", 1000)
    write_vocab_gguf(tmp_path / "d.gguf", tok, "qwen2", add_bos=False, **{"tokenizer.ggml.precompiled_charsmap": "x"})
    with pytest.raises(ValueError, match="tokenizer key tokenizer.ggml.precompiled_charsmap is not modelled"):
        load_tokenizer_file(tmp_path / "d.gguf", 1000)
