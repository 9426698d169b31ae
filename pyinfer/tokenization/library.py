"""Tokenizers run by their own libraries: Hugging Face ``tokenizer.json`` (``tokenizers``) and
SentencePiece ``tokenizer.model`` (``sentencepiece``), behind pyinfer's tokenizer interface:

    vocab_size   ids it can produce are 0..vocab_size-1 (added tokens included)
    bos_id, eos_id, stop_ids, bos_token, eos_token, chat_template
    encode(text, bos=True, eos=False) -> ids     bos: add special tokens as transformers does
    decode(ids) -> str                           the library's decode, special tokens kept
    stream(prev_token=-1) -> feed(id) / flush()  incremental text, UTF-8 safe
"""
from __future__ import annotations

import os

from .special import SpecialTokens, read_special_tokens


class WindowStream:
    """Incremental detokenization as vLLM does it: decode a short window of ids before and after
    the last emitted one and emit the difference, holding text back while it ends in an incomplete
    UTF-8 sequence (U+FFFD). ``prev_token`` is context (e.g. BOS): its own text is not emitted.
    flush() emits what the full decode has beyond what was emitted, so joining every feed() and the
    flush() equals decode(ids) minus the context's text."""

    def __init__(self, tokenizer, prev_token: int = -1):
        self.tokenizer = tokenizer
        self.ids: list[int] = [] if prev_token == -1 else [prev_token]
        self.context = len(self.ids)
        self.prefix_offset, self.read_offset = 0, len(self.ids)
        self.emitted = ""

    def feed(self, token: int) -> str:
        self.tokenizer._check_id(token)
        self.ids.append(token)
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset])
        text = self.tokenizer.decode(self.ids[self.prefix_offset:])
        if len(text) > len(prefix) and not text.endswith("\ufffd") and text.startswith(prefix):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            self.emitted += text[len(prefix):]
            return text[len(prefix):]
        return ""

    def flush(self) -> str:
        full = self.tokenizer.decode(self.ids)
        context = self.tokenizer.decode(self.ids[:self.context])
        target = full[len(context):] if full.startswith(context) else full
        if not target.startswith(self.emitted):
            return ""                        # what was emitted cannot be taken back
        rest, self.emitted = target[len(self.emitted):], target
        self.prefix_offset, self.read_offset = max(len(self.ids) - 1, 0), len(self.ids)
        return rest


class _LibraryTokenizer:
    special: SpecialTokens
    vocab_size: int

    @property
    def bos_id(self) -> int | None:
        return self.special.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.special.eos_id

    @property
    def bos_token(self) -> str | None:
        return self.special.bos_token

    @property
    def eos_token(self) -> str | None:
        return self.special.eos_token

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return self.special.stop_ids

    @property
    def chat_template(self) -> str | None:
        return self.special.chat_template

    def _check_id(self, token: int) -> None:
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"token id {token} is out of range for a vocab of {self.vocab_size} tokens")

    def stream(self, safe: bool = False, prev_token: int = -1) -> WindowStream:
        return WindowStream(self, prev_token)


class HFTokenizer(_LibraryTokenizer):
    """``tokenizer.json`` through the ``tokenizers`` library, exactly as the file says: its normalizer,
    pre-tokenizer, model, post-processor (which adds BOS where the file's template does) and decoder.
    As in transformers 5, tokenizer_config.json's add_bos_token / add_eos_token do not override a
    tokenizer.json (transformers drops them when the file exists). Note: transformers 5's
    model-specific classes (tokenizer_class LlamaTokenizer, ...) may rebuild the pipeline from the
    vocabulary instead; pyinfer runs the file as written, as PreTrainedTokenizerFast does."""

    def __init__(self, path: str, special: SpecialTokens | None = None):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ValueError(f"{path} is a Hugging Face tokenizer.json; reading it needs the tokenizers "
                             "package (pip install 'pyinfer[hf]')") from None
        try:
            tok = Tokenizer.from_file(os.fspath(path))
        except Exception as e:           # the Rust side raises its own Exception type
            raise ValueError(f"{path} is not a readable tokenizer.json: {e}") from None
        directory = os.path.dirname(os.path.abspath(path))
        special = special or read_special_tokens(directory, tok.token_to_id)
        self._setup(tok, special, os.fspath(path))
        cfg = special.tokenizer_config or {}
        self.clean_up_spaces = bool(cfg.get("clean_up_tokenization_spaces", False))

    @classmethod
    def from_tokenizer(cls, tok, special: SpecialTokens, add_bos: bool, source: str) -> "HFTokenizer":
        """A ready ``tokenizers.Tokenizer`` (e.g. rebuilt from a GGUF vocabulary), BOS added if asked."""
        self = cls.__new__(cls)
        self._setup(tok, special, source)
        self._set_template(add_bos, False)
        self.clean_up_spaces = False
        return self

    def _setup(self, tok, special: SpecialTokens, source: str) -> None:
        self.tok, self.special, self.path = tok, special, source
        vocab = tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1 if vocab else 0

    def _set_template(self, add_bos: bool, add_eos: bool) -> None:
        """transformers' update_post_processor: BOS / EOS around the text as the flags say."""
        from tokenizers import processors
        s = self.special
        add_bos, add_eos = add_bos and s.bos_token is not None, add_eos and s.eos_token is not None
        single = (f"{s.bos_token}:0 " if add_bos else "") + "$A:0" + (f" {s.eos_token}:0" if add_eos else "")
        pair = single + (f" {s.bos_token}:1" if add_bos else "") + " $B:1" + (f" {s.eos_token}:1" if add_eos else "")
        tokens = ([(s.bos_token, s.bos_id)] if add_bos else []) + ([(s.eos_token, s.eos_id)] if add_eos else [])
        self.tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def encode(self, text: str | bytes, bos: bool = True, eos: bool = False) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        ids = self.tok.encode(text, add_special_tokens=bos).ids
        if eos and self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: list[int]) -> str:
        for t in ids:
            self._check_id(t)
        text = self.tok.decode(list(ids), skip_special_tokens=False)
        return clean_up_tokenization(text) if self.clean_up_spaces else text


def clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization (applied when clean_up_tokenization_spaces is true)."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


class SentencePieceTokenizer(_LibraryTokenizer):
    """``tokenizer.model`` through ``sentencepiece``: encode is SentencePiece's EncodeAsIds with BOS
    first when asked and the model adds it (tokenizer_config.json add_bos_token, default true as
    Llama's tokenizer), decode is DecodeIds."""

    def __init__(self, path: str):
        try:
            import sentencepiece
        except ImportError:
            raise ValueError(f"{path} is a SentencePiece model; reading it needs the sentencepiece "
                             "package (pip install 'pyinfer[hf]')") from None
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.Load(os.fspath(path))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{path} is not a readable SentencePiece model: {e}") from None
        directory = os.path.dirname(os.path.abspath(path))

        special = read_special_tokens(directory, self.token_to_id)
        defaults = {"bos_id": self.sp.bos_id(), "eos_id": self.sp.eos_id()}
        fields = dict(special.__dict__)
        for k, v in defaults.items():
            if fields[k] is None and v >= 0:
                fields[k] = v
        if fields["eos_id"] is not None and fields["eos_id"] not in special.stop_ids:
            fields["stop_ids"] = (fields["eos_id"],) + special.stop_ids
        for k, tok_field in (("bos_id", "bos_token"), ("eos_id", "eos_token")):
            if fields[tok_field] is None and fields[k] is not None:
                fields[tok_field] = self.sp.IdToPiece(fields[k])
        self.special = SpecialTokens(**fields)
        self.add_bos = special.add_bos_token is not False and self.bos_id is not None
        self.vocab_size = self.sp.GetPieceSize()
        self.path = os.fspath(path)

    def token_to_id(self, token: str) -> int | None:
        i = self.sp.PieceToId(token)
        return None if i == self.sp.unk_id() and token != self.sp.IdToPiece(i) else i

    def encode(self, text: str | bytes, bos: bool = True, eos: bool = False) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        ids = list(self.sp.EncodeAsIds(text))
        if bos and self.add_bos:
            ids.insert(0, self.bos_id)
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: list[int]) -> str:
        for t in ids:
            self._check_id(t)
        return self.sp.DecodeIds(list(ids))
