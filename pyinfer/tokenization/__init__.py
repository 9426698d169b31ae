"""Tokenizers behind one interface, chosen by what the file is (its content, not its name):

    tokenizer.json      Hugging Face, run by the ``tokenizers`` library      library.HFTokenizer
    tokenizer.model     SentencePiece, run by ``sentencepiece``              library.SentencePieceTokenizer
    llama2.c .bin       llama2.c's BPE (pyinfer.tokenizer)                   Llama2cTokenizer
    a GGUF file         its embedded tokenizer.ggml.* vocabulary             gguf_vocab

A model directory's own tokenizer is found without --tokenizer (tokenizer.json first, as transformers
prefers its fast tokenizer, then tokenizer.model, then llama2.c's tok*.bin). Every tokenizer has
vocab_size (ids it can produce are below it), bos_id / eos_id (None when the model has none),
stop_ids (generation stops on them), chat_template, encode, decode and stream.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..tokenizer import ByteTokenizer, Llama2cTokenizer, check_tokenizer_matches

LLAMA2C_STOP_IDS = (1, 2)       # llama2.c: BOS (run.c stops when it comes back) and EOS
DIR_ORDER = ("tokenizer.json", "tokenizer.model")

__all__ = ["load_tokenizer_file", "resolve_tokenizer", "tokenizer_kind", "check_tokenizer_matches",
           "stop_ids_of", "with_stop_ids", "LLAMA2C_STOP_IDS"]


def tokenizer_kind(path: str | os.PathLike) -> str:
    """'hf', 'sentencepiece', 'gguf' or 'llama2c', from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:4] == b"GGUF":
        return "gguf"
    if head.lstrip()[:1] == b"{":
        return "hf"
    # SentencePiece ModelProto: field 1 (pieces), length-delimited, a non-zero length next. llama2.c's
    # .bin starts with int32 max_token_length: 10 would also give 0x0A, but then three zero bytes.
    if head[:1] == b"\x0a" and head[1:2] != b"\x00":
        return "sentencepiece"
    return "llama2c"


def load_tokenizer_file(path: str | os.PathLike, vocab_size: int):
    """The tokenizer in ``path`` (a file, or a directory holding one), whatever its kind."""
    path = os.fspath(path)
    if os.path.isdir(path):
        found = find_in_directory(path)
        if found is None:
            raise ValueError(f"{path} holds no tokenizer ({', '.join(DIR_ORDER)} or a llama2.c tok*.bin)")
        path = found
    if not os.path.exists(path):
        raise ValueError(f"tokenizer {path} does not exist")
    kind = tokenizer_kind(path)
    if kind == "hf":
        from .library import HFTokenizer
        return HFTokenizer(path)
    if kind == "sentencepiece":
        from .library import SentencePieceTokenizer
        return SentencePieceTokenizer(path)
    if kind == "gguf":
        from ..loaders.gguf import _reader
        from ..loaders.gguf_meta import metadata
        from .gguf_vocab import gguf_tokenizer
        return gguf_tokenizer(metadata(_reader(path)), path)
    return Llama2cTokenizer.from_file(path, vocab_size)


def find_in_directory(directory: str | os.PathLike) -> str | None:
    """tokenizer.json, else tokenizer.model, else llama2.c's tokenizer.bin / tok*.bin."""
    folder = Path(directory)
    for name in DIR_ORDER:
        if (folder / name).is_file():
            return str(folder / name)
    found = sorted(folder.glob("tok*.bin"))
    return str(found[0]) if found else None


def resolve_tokenizer(tokenizer: str | os.PathLike | None, model_path: str | os.PathLike, vocab_size: int,
                      gguf_meta: dict | None = None):
    """The tokenizer for a checkpoint: the one given, else the model directory's own (a HF directory's
    tokenizer.json / tokenizer.model, llama2.c's tok*.bin beside a .bin), else the one a GGUF embeds.
    It must match the model (every id it can produce below ``vocab_size``)."""
    if tokenizer is not None:
        tok = load_tokenizer_file(tokenizer, vocab_size)
    else:
        model_path = Path(model_path)
        folder = model_path if model_path.is_dir() else model_path.parent
        found = None if gguf_meta is not None and "tokenizer.ggml.model" in gguf_meta else find_in_directory(folder)
        if found is not None:
            tok = load_tokenizer_file(found, vocab_size)
        elif gguf_meta is not None:
            from .gguf_vocab import gguf_tokenizer
            tok = gguf_tokenizer(gguf_meta, str(model_path))
        else:
            raise ValueError(f"no tokenizer for {model_path}: pass --tokenizer PATH (tokenizer.json, "
                             "tokenizer.model or llama2.c's tokenizer .bin)")
    check_tokenizer_matches(tok, vocab_size)
    return tok


def with_stop_ids(params, tokenizer):
    """SamplingParams resolved for a run: the tokenizer's EOS ids (its model's; llama2.c's BOS/EOS 1, 2
    without a tokenizer) joined to the extra ``stop_token_ids``, unless ``ignore_eos``. The result has
    ignore_eos=True, which marks it resolved: resolving it again adds nothing."""
    if not hasattr(params, "ignore_eos") or params.ignore_eos:     # resolved, or not SamplingParams (checked later)
        return params
    ids = tuple(dict.fromkeys(stop_ids_of(tokenizer) + tuple(params.stop_token_ids)))
    return replace(params, stop_token_ids=ids, ignore_eos=True)


def stop_ids_of(tokenizer) -> tuple[int, ...]:
    """The ids generation stops on: the tokenizer's (its model's EOS ids), llama2.c's 1/2 without one."""
    if tokenizer is None:
        return LLAMA2C_STOP_IDS
    return tuple(getattr(tokenizer, "stop_ids", LLAMA2C_STOP_IDS))


def byte_tokenizer(vocab_size: int) -> ByteTokenizer:
    return ByteTokenizer(vocab_size)
