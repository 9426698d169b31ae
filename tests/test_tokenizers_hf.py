"""Tokenizers from a model directory, checked against the libraries themselves: tokenizer.json against
transformers' AutoTokenizer (and the ``tokenizers`` library), tokenizer.model against ``sentencepiece``.
Every tokenizer file is trained here, at test time, on a small corpus."""
from __future__ import annotations

import json
import shutil

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

from pyinfer.tokenization import (LLAMA2C_STOP_IDS, load_tokenizer_file, resolve_tokenizer,  # noqa: E402
                                  tokenizer_kind)
from pyinfer.tokenization.library import HFTokenizer, SentencePieceTokenizer  # noqa: E402

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
CORPUS = ["Once upon a time there was a little cat named Tom.", "The year 2024 had 366 days, not 365!",
          "naïve café — Grüße aus Köln; 日本語のテキスト 🙂🚀", "   spaces    and\ttabs\n\nnewlines  ",
          "don't won't I'm you're it's we'll they'd", "x = f(y) + 3.14159 * z**2  # comment"]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]


def texts(rng) -> list[str]:
    """Varied text: unicode, whitespace runs, digits, special-token strings, random mixes of those."""
    fixed = ["Once upon a time", "", " ", "   leading and trailing   ", "a\n\n\nb\t\tc", "1234567890 42 007",
             "héllo wörld ñ 日本 🙂 \u200b", "<|eot_id|>", "hi<|eot_id|>there<|begin_of_text|>", "<s> </s> <unk>",
             "don't STOP believin'", "\U0001F600\U0001F680 mixed ascii"]
    alphabet = list("abcXYZ 0123\n\t.,!'é日🙂") + SPECIALS[:3]
    for _ in range(12):
        fixed.append("".join(alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(1, 30)))))
    return fixed


def write_config(directory, **fields) -> None:
    with open(directory / "tokenizer_config.json", "w") as f:
        json.dump(fields, f)


@pytest.fixture(scope="module")
def byte_level_dir(tmp_path_factory):
    """A Llama-3-style byte-level BPE tokenizer.json (BOS added by its post-processor) + configs."""
    d = tmp_path_factory.mktemp("llama3_tok")
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=420, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", 0)])
    tok.save(str(d / "tokenizer.json"))
    write_config(d, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                 tokenizer_class="PreTrainedTokenizerFast")
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 2]}))
    (d / "config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1}))
    return d


@pytest.fixture(scope="module")
def metaspace_dir(tmp_path_factory):
    """A Llama-2-style tokenizer.json: "▁" normalizer, byte-fallback BPE, BOS added by its template."""
    d = tmp_path_factory.mktemp("llama2_tok")
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(vocab_size=420, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.save(str(d / "tokenizer.json"))
    # add_bos_token=False is what transformers 5 ignores when tokenizer.json exists: BOS still comes
    write_config(d, bos_token="<s>", eos_token="</s>", add_bos_token=False,
                 tokenizer_class="PreTrainedTokenizerFast")
    return d


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    """A SentencePiece BPE tokenizer.model with byte fallback, trained here."""
    spm = pytest.importorskip("sentencepiece")
    d = tmp_path_factory.mktemp("spm_tok")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 30), model_prefix=str(d / "tokenizer"), vocab_size=400,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
        minloglevel=2, hard_vocab_limit=False)
    return d


@pytest.mark.parametrize("which", ["byte_level_dir", "metaspace_dir"])
def test_tokenizer_json_encodes_as_transformers(request, which, rng):
    transformers = pytest.importorskip("transformers")
    d = request.getfixturevalue(which)
    ours = load_tokenizer_file(d, 10_000)
    assert isinstance(ours, HFTokenizer)
    theirs = transformers.AutoTokenizer.from_pretrained(str(d))
    for text in texts(rng):
        ids = theirs(text)["input_ids"]
        assert ours.encode(text) == ids, text
        assert ours.encode(text, bos=False) == theirs(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids), text
    assert ours.bos_id == theirs.bos_token_id and ours.eos_id == theirs.eos_token_id
    assert ours.vocab_size == len(theirs)


def test_special_ids_come_from_the_configs(byte_level_dir, metaspace_dir):
    tok = load_tokenizer_file(byte_level_dir, 10_000)
    eot, eos, bos = (tok.tok.token_to_id(t) for t in ("<|eot_id|>", "<|end_of_text|>", "<|begin_of_text|>"))
    assert (tok.bos_id, tok.eos_id) == (bos, eot)
    assert set(tok.stop_ids) == {eot, eos}            # tokenizer EOS + generation_config's list + config.json's
    tok2 = load_tokenizer_file(metaspace_dir, 10_000)
    assert (tok2.bos_id, tok2.eos_id, tok2.stop_ids) == (1, 2, (2,))
    assert tok2.encode("hi")[0] == 1 and tok2.encode("hi", bos=False)[0] != 1


def test_sentencepiece_model_encodes_as_sentencepiece(spm_dir, rng):
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))
    ours = load_tokenizer_file(spm_dir, 1000)
    assert isinstance(ours, SentencePieceTokenizer) and ours.vocab_size == sp.GetPieceSize()
    for text in texts(rng):
        ids = sp.EncodeAsIds(text)
        assert ours.encode(text, bos=False) == ids, text
        assert ours.encode(text) == [sp.bos_id()] + ids
        assert ours.decode(ids) == sp.DecodeIds(ids)
    assert (ours.bos_id, ours.eos_id, ours.stop_ids) == (1, 2, (2,))


def test_kind_is_told_by_content_not_name(tmp_path, byte_level_dir, spm_dir, stories260k):
    shutil.copy(byte_level_dir / "tokenizer.json", tmp_path / "vocab.bin")
    shutil.copy(spm_dir / "tokenizer.model", tmp_path / "tok.json")
    assert tokenizer_kind(tmp_path / "vocab.bin") == "hf"
    assert tokenizer_kind(tmp_path / "tok.json") == "sentencepiece"
    assert tokenizer_kind(stories260k["tokenizer"]) == "llama2c"
    assert isinstance(load_tokenizer_file(tmp_path / "vocab.bin", 1000), HFTokenizer)


def test_directory_prefers_tokenizer_json(tmp_path, byte_level_dir, spm_dir):
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(byte_level_dir / name, tmp_path / name)
    shutil.copy(spm_dir / "tokenizer.model", tmp_path / "tokenizer.model")
    (tmp_path / "config.json").write_text("{}")
    assert isinstance(resolve_tokenizer(None, tmp_path, 1000), HFTokenizer)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="special token '<|begin_of_text|>' .* not in the tokenizer's vocab"):
        resolve_tokenizer(None, tmp_path, 1000)            # the config names a token the .model lacks
    (tmp_path / "tokenizer_config.json").unlink()
    assert isinstance(resolve_tokenizer(None, tmp_path / "config.json", 1000), SentencePieceTokenizer)
    (tmp_path / "tokenizer.model").unlink()
    with pytest.raises(ValueError, match="no tokenizer for .*pass --tokenizer"):
        resolve_tokenizer(None, tmp_path, 1000)


def test_vocab_mismatch_is_refused_naming_both_sizes(byte_level_dir):
    n = load_tokenizer_file(byte_level_dir, 10_000).vocab_size
    resolve_tokenizer(byte_level_dir, byte_level_dir, n + 64)      # a padded embedding fits
    with pytest.raises(ValueError, match=f"tokenizer has {n} tokens but the model's vocab_size is {n - 1}"):
        resolve_tokenizer(byte_level_dir, byte_level_dir, n - 1)


def test_bad_special_token_is_refused(tmp_path, byte_level_dir):
    shutil.copy(byte_level_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    write_config(tmp_path, bos_token="<|nope|>")
    with pytest.raises(ValueError, match=r"special token '<\|nope\|>' .* not in the tokenizer's vocabulary"):
        load_tokenizer_file(tmp_path, 1000)


@pytest.mark.parametrize("which", ["byte_level_dir", "metaspace_dir", "spm_dir"])
def test_streaming_equals_decode_and_holds_partial_utf8(request, which, rng):
    tok = load_tokenizer_file(request.getfixturevalue(which), 10_000)
    for text in texts(rng):
        ids = tok.encode(text)
        if not ids:
            continue
        first_is_bos = ids[0] == tok.bos_id
        stream = tok.stream(prev_token=ids[0]) if first_is_bos else tok.stream()
        parts = [stream.feed(t) for t in (ids[1:] if first_is_bos else ids)] + [stream.flush()]
        assert all("\ufffd" not in p for p in parts[:-1]) or "\ufffd" in tok.decode(ids)
        whole = tok.decode(ids)
        assert "".join(parts) == (whole[len(tok.decode(ids[:1])):] if first_is_bos else whole), text
    random_ids = [int(i) for i in rng.integers(0, tok.vocab_size, 60)]    # any ids: never raises
    stream = tok.stream()
    assert all(isinstance(stream.feed(t), str) for t in random_ids) and isinstance(stream.flush(), str)
    with pytest.raises(ValueError, match="out of range"):
        stream.feed(tok.vocab_size)


def test_llama2c_tokenizer_keeps_its_stop_ids(stories260k):
    tok = load_tokenizer_file(stories260k["tokenizer"], 512)
    assert (tok.bos_id, tok.eos_id, tuple(tok.stop_ids)) == (1, 2, LLAMA2C_STOP_IDS)
