"""The tokenizer embedded in a GGUF file (``tokenizer.ggml.*``), as llama.cpp runs it.

``model = "llama"``: llama.cpp's SentencePiece-style tokenizer (llama-vocab.cpp, llm_tokenizer_spm):
control tokens written in the text are split out first (llama.cpp's parse_special, as its CLI does);
each text fragment gets "▁" for every space and, at the start or after a special token, a leading
"▁" (add_space_prefix); its UTF-8 characters are merged pairwise, always the pair whose joined text
is a token with the highest score (ties: leftmost); a symbol that is not a token becomes its bytes'
``<0xNN>`` tokens. BOS first when tokenizer.ggml.add_bos_token (default true), EOS last when
add_eos_token. Decoding turns "▁" into spaces and byte tokens into bytes, drops control tokens, and
drops one leading space right after BOS (as SentencePiece and llama2.c's run.c do).

``model = "gpt2"``: byte-level BPE, rebuilt as a ``tokenizers`` Tokenizer from tokens + merges with the
pre-tokenizer regex llama.cpp compiles in for ``tokenizer.ggml.pre`` (llama-bpe, qwen2; others refused).
"""
from __future__ import annotations

import heapq
import re

from ..tokenizer import StreamDecoder, _TokenizerBase
from .special import SpecialTokens

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6    # llama.cpp token types
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
KNOWN_KEYS = {"model", "tokens", "scores", "token_type", "merges", "pre", "bos_token_id", "eos_token_id",
              "unknown_token_id", "padding_token_id", "seperator_token_id", "add_bos_token",
              "add_eos_token", "add_space_prefix", "eot_token_id", "eom_token_id"}
BPE_PRE_REGEX = {
    "llama-bpe": r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
                 r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
             r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
BPE_IGNORE_MERGES = {"llama-bpe": True, "qwen2": False}    # llama.cpp's ignore_merges per pre type


def _special(meta: dict, tokens: list[str]) -> SpecialTokens:
    def tid(key):
        v = meta.get(f"tokenizer.ggml.{key}")
        return int(v) if v is not None and 0 <= int(v) < len(tokens) else None

    bos, eos = tid("bos_token_id"), tid("eos_token_id")
    stops = [t for t in (eos, tid("eot_token_id"), tid("eom_token_id")) if t is not None]
    return SpecialTokens(
        bos_token=tokens[bos] if bos is not None else None, eos_token=tokens[eos] if eos is not None else None,
        bos_id=bos, eos_id=eos, stop_ids=tuple(dict.fromkeys(stops)),
        chat_template=meta.get("tokenizer.chat_template"))


def gguf_tokenizer(meta: dict, source: str):
    """The tokenizer of a GGUF's metadata, or ValueError naming what is missing or unsupported."""
    model = meta.get("tokenizer.ggml.model")
    if model is None:
        raise ValueError(f"{source} embeds no tokenizer (no tokenizer.ggml.model): pass --tokenizer")
    for key in meta:
        if key.startswith("tokenizer.ggml.") and key[len("tokenizer.ggml."):] not in KNOWN_KEYS:
            raise ValueError(f"{source}: tokenizer key {key} is not modelled by pyinfer (refused)")
    if model == "llama":
        return GGUFSpmTokenizer(meta)
    if model == "gpt2":
        return gguf_bpe_tokenizer(meta, source)
    raise ValueError(f"{source}: GGUF tokenizer model {model!r} is not supported (supported: llama, gpt2)")


class GGUFSpmTokenizer(_TokenizerBase):
    def __init__(self, meta: dict):
        self.tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
        n = len(self.tokens)
        self.scores = list(meta.get("tokenizer.ggml.scores") or [0.0] * n)
        self.types = list(meta.get("tokenizer.ggml.token_type") or [NORMAL] * n)
        if len(self.scores) != n or len(self.types) != n:
            raise ValueError(f"GGUF tokenizer has {n} tokens but {len(self.scores)} scores and "
                             f"{len(self.types)} token types")
        self.vocab_size = n
        self.special = _special(meta, self.tokens)
        self.bos_id, self.eos_id = self.special.bos_id, self.special.eos_id
        self.stop_ids = self.special.stop_ids
        self.chat_template = self.special.chat_template
        self.add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", True)) and self.bos_id is not None
        self.add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and self.eos_id is not None
        self.add_space_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
        self._id_of: dict[str, int] = {}
        for i, t in enumerate(self.tokens):
            self._id_of[t] = i                 # llama.cpp's token_to_id: the last id of a text wins
        specials = [i for i, t in enumerate(self.types) if t in (CONTROL, USER_DEFINED, UNKNOWN)]
        specials.sort(key=lambda i: -len(self.tokens[i]))          # longest first, as llama.cpp
        self._special_re = re.compile("|".join(re.escape(self.tokens[i]) for i in specials)) if specials else None

    @property
    def bos_token(self):
        return self.special.bos_token

    @property
    def eos_token(self):
        return self.special.eos_token

    def stream(self, safe: bool = False, prev_token: int = -1) -> StreamDecoder:
        return StreamDecoder(self, safe=safe, prev_token=prev_token)

    def encode(self, text: str | bytes, bos: bool = True, eos: bool = False) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        out = [self.bos_id] if bos and self.add_bos else []
        prev_special, pos = True, 0
        pieces = []
        for m in (self._special_re.finditer(text) if self._special_re else ()):
            if m.start() > pos:
                pieces.append((text[pos:m.start()], None))
            pieces.append((m.group(), self._id_of[m.group()]))
            pos = m.end()
        if pos < len(text):
            pieces.append((text[pos:], None))
        for fragment, special_id in pieces:
            if special_id is not None:
                out.append(special_id)
                prev_special = True
                continue
            if self.add_space_prefix and prev_special:
                fragment = " " + fragment
            out.extend(self._spm(fragment.replace(" ", "\u2581")))
            prev_special = False
        if eos and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def _spm(self, text: str) -> list[int]:
        """llm_tokenizer_spm_session::tokenize: characters, best-score bigram merges, resegment."""
        sym = list(text)                       # each symbol's text; "" once merged away
        n = len(sym)
        nxt, prv = list(range(1, n)) + [-1], list(range(-1, n - 1))
        heap: list = []

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            tid = self._id_of.get(sym[left] + sym[right])
            if tid is not None:
                heapq.heappush(heap, (-self.scores[tid], left, right, len(sym[left]) + len(sym[right])))

        for i in range(1, n):
            push(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if not sym[left] or not sym[right] or len(sym[left]) + len(sym[right]) != size:
                continue
            sym[left], sym[right] = sym[left] + sym[right], ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            push(prv[left], left)
            push(left, nxt[left])
        out, i = [], 0 if n else -1
        while i != -1:
            tid = self._id_of.get(sym[i])
            if tid is not None:
                out.append(tid)
            else:
                for b in sym[i].encode("utf-8"):
                    byte_id = self._id_of.get(f"<0x{b:02X}>")
                    if byte_id is None:
                        raise ValueError(f"byte 0x{b:02X} has no <0x{b:02X}> token in this GGUF vocabulary")
                    out.append(byte_id)
            i = nxt[i]
        return out

    def decode_piece(self, prev_token: int, token: int) -> bytes:
        self._check_id(token)
        kind, text = self.types[token], self.tokens[token]
        if kind == BYTE:
            m = _BYTE_TOKEN.fullmatch(text)
            return bytes([int(m[1], 16)]) if m else b""
        if kind == CONTROL or kind == UNUSED:
            return b""
        piece = ("\u2585" if kind == UNKNOWN else text.replace("\u2581", " ")).encode("utf-8")
        if prev_token == self.bos_id and self.bos_id is not None and piece[:1] == b" ":
            piece = piece[1:]
        return piece


def gguf_bpe_tokenizer(meta: dict, source: str):
    """A GGUF ``gpt2`` (byte-level BPE) vocabulary as an HFTokenizer-like object."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    from .library import HFTokenizer
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in BPE_PRE_REGEX:
        raise ValueError(f"{source}: GGUF BPE pre-tokenizer {pre!r} is not supported "
                         f"(supported: {', '.join(BPE_PRE_REGEX)})")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = list(meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    normal = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty not in (CONTROL, USER_DEFINED)}
    tok = Tokenizer(models.BPE(vocab=normal, merges=merges, ignore_merges=BPE_IGNORE_MERGES[pre]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(BPE_PRE_REGEX[pre]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    added = sorted((i for i, ty in enumerate(types) if ty in (CONTROL, USER_DEFINED)))
    for i in added:                      # ids are assigned in order: must land on their GGUF ids
        tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)])
        if tok.token_to_id(tokens[i]) != i:
            raise ValueError(f"{source}: GGUF special token {tokens[i]!r} (id {i}) is out of order")
    special = _special(meta, tokens)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    return HFTokenizer.from_tokenizer(tok, special, add_bos=add_bos, source=source)
