"""llama2.c-compatible tokenizers: the BPE of ``run.c`` (byte for byte) and a plain byte tokenizer.

Ids shared by both: 0 ``<unk>``, 1 BOS, 2 EOS, 3..258 the raw bytes 0x00..0xFF (llama2.c's byte
fallback). Streaming output goes through :class:`StreamDecoder`, which holds back incomplete UTF-8.
"""
from __future__ import annotations

import codecs
import heapq
import os
import re
import struct

BOS_ID, EOS_ID, BYTE_OFFSET = 1, 2, 3      # byte b has id b + 3 (run.c: "+3 ... <unk>, <s>, </s>")
_NO_MERGE_SCORE = -1e10                    # run.c's best_score start: a pair must score strictly above
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


def _is_printable_or_space(byte: int) -> bool:
    """C-locale ``isprint(b) || isspace(b)``, the test of run.c's safe_printf."""
    return 0x20 <= byte <= 0x7E or 0x09 <= byte <= 0x0D


class _TokenizerBase:
    """Shared decode/streaming; subclasses define ``vocab_size``, ``encode`` and ``decode_piece``."""

    bos_id, eos_id = BOS_ID, EOS_ID
    stop_ids = (BOS_ID, EOS_ID)     # llama2.c's run.c stops when BOS comes back; EOS too
    chat_template = None
    vocab_size: int

    def _check_id(self, token: int) -> None:
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"token id {token} is out of range for a vocab of {self.vocab_size} tokens")

    def stream(self, safe: bool = False, prev_token: int = -1) -> StreamDecoder:
        return StreamDecoder(self, safe=safe, prev_token=prev_token)

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``: the decode_piece bytes joined, then UTF-8 with errors="replace".

        A leading BOS is skipped and only makes the next piece drop one leading space: the dummy
        prefix encode added. So decode(encode(s)) == s (unless the vocab can merge literal "<0xNN>"
        text into a byte token; tok512 cannot), and a leading space survives: encode(" x") is BOS, " ", " ", "x" and decodes
        to " x" (run.c does not collapse whitespace as SentencePiece may). Without a leading BOS
        nothing is stripped: decode(encode(s, bos=False)) == " " + s for non-empty s. Other
        special ids decode to their pieces (EOS to "\\n</s>\\n" for llama2.c vocabs), as in run.c."""
        stream = self.stream()
        return "".join(stream.feed(t) for t in ids) + stream.flush()


class StreamDecoder:
    """Token-by-token text: ``feed(token)`` returns the newly complete text, ``flush()`` the rest.

    Incomplete UTF-8 sequences are held until they complete (or flushed as U+FFFD), so (with safe=False)
    joining every feed() and the flush() equals ``tokenizer.decode(ids)``. A BOS fed as the very first token
    prints nothing, as in decode. ``safe=True`` mirrors run.c's safe_printf for CLI output: a
    single-byte piece that is neither printable ASCII nor whitespace is dropped -- which, as in
    run.c, also drops byte-fallback bytes >= 0x80, so non-ASCII text without its own piece vanishes.
    """

    def __init__(self, tokenizer: _TokenizerBase, safe: bool = False, prev_token: int = -1):
        self.tokenizer, self.safe, self.prev_token = tokenizer, safe, prev_token
        self._started = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        first, self._started = not self._started, True
        if first and token == self.tokenizer.bos_id and self.prev_token == -1:
            self.tokenizer._check_id(token)
            self.prev_token = token
            return ""
        piece = self.tokenizer.decode_piece(self.prev_token, token)
        self.prev_token = token
        if self.safe and len(piece) == 1 and not _is_printable_or_space(piece[0]):
            return ""
        return self._utf8.decode(piece)

    def flush(self) -> str:
        """Whatever is held back (an incomplete UTF-8 tail becomes U+FFFD); the stream goes on."""
        return self._utf8.decode(b"", final=True)


class Llama2cTokenizer(_TokenizerBase):
    """llama2.c's SentencePiece-style BPE (``run.c``: build_tokenizer, encode, decode).

    ``vocab[i]`` is token i's bytes and ``scores[i]`` its float32 merge score (as a Python float).
    Like run.c, which handles pieces as C strings, encode and decode see a piece only up to its
    first NUL byte (no piece of tok512.bin has one). A piece stored twice (tok512.bin has none)
    resolves to its first id; run.c's bsearch may return either.
    """

    def __init__(self, vocab: list[bytes], scores: list[float], max_token_length: int | None = None):
        if len(vocab) != len(scores):
            raise ValueError(f"{len(vocab)} pieces but {len(scores)} scores")
        if len(vocab) <= EOS_ID:
            raise ValueError(f"a vocab needs <unk>, BOS and EOS (ids 0..2), got {len(vocab)} tokens")
        self.vocab, self.scores = list(vocab), [float(s) for s in scores]
        self.vocab_size = len(self.vocab)
        self.max_token_length = max(map(len, vocab)) if max_token_length is None else max_token_length
        self._pieces = [p.split(b"\0", 1)[0] for p in self.vocab]     # the C-string view
        self._id_of: dict[bytes, int] = {}
        for i, piece in enumerate(self._pieces):
            self._id_of.setdefault(piece, i)

    @classmethod
    def from_file(cls, path: str | os.PathLike, vocab_size: int | None = None) -> Llama2cTokenizer:
        """Read llama2.c's format: int32 max_token_length, then per token float32 score, int32
        byte length, bytes (little-endian). ``vocab_size`` given: exactly that many tokens (as
        run.c reads config.vocab_size) and nothing after them; None: tokens up to end of file."""
        if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size < 1):
            raise ValueError(f"vocab_size must be a positive int or None, got {vocab_size!r}")
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < 4:
            raise ValueError(f"{path}: {len(data)} bytes, too short for the int32 max_token_length")
        (max_token_length,) = struct.unpack_from("<i", data, 0)
        if max_token_length < 0:
            raise ValueError(f"{path}: negative max_token_length {max_token_length} (corrupt file?)")
        vocab, scores, offset = [], [], 4
        wanted = f" of the {vocab_size} expected" if vocab_size is not None else ""
        while (offset < len(data)) if vocab_size is None else (len(vocab) < vocab_size):
            i, left = len(vocab), len(data) - offset
            if left < 8:
                raise ValueError(f"{path}: truncated at token {i}{wanted}: {left} bytes left, "
                                 "need 8 for its float32 score and int32 byte length")
            score, n_bytes = struct.unpack_from("<fi", data, offset)
            offset += 8
            if not 0 <= n_bytes <= len(data) - offset:
                raise ValueError(f"{path}: token {i} claims a byte length of {n_bytes} but "
                                 f"{len(data) - offset} bytes are left (corrupt or truncated file)")
            vocab.append(data[offset:offset + n_bytes])
            scores.append(score)
            offset += n_bytes
        if offset != len(data):
            raise ValueError(f"{path}: {len(data) - offset} bytes left after token {len(vocab) - 1}: "
                             f"the file holds more than vocab_size={vocab_size} tokens")
        return cls(vocab, scores, max_token_length)

    def encode(self, text: str | bytes, bos: bool = True, eos: bool = False) -> list[int]:
        """Ids of ``text`` exactly as run.c's encode() gives them for its UTF-8 bytes.

        BOS if ``bos``; for non-empty text the dummy-prefix id of b" "; each codepoint's piece, or
        its bytes as byte-fallback ids (byte + 3); then, repeatedly, the adjacent pair whose joined
        piece is in the vocab with the highest score (> -1e10; ties: leftmost) is merged -- BOS
        takes part; byte-fallback tokens join as their "<0xNN>" text. EOS is appended last.
        ``bytes`` are used as they are (run.c's walk over invalid UTF-8 included). Unlike run.c,
        which stops at a NUL, a NUL byte is encoded like any other (byte fallback <0x00>)."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        ids = [BOS_ID] if bos else []
        if data:
            if b" " not in self._id_of:
                raise ValueError("the vocab has no b' ' piece for the dummy prefix, cannot encode")
            ids.append(self._id_of[b" "])
        ids.extend(self._codepoint_ids(data))
        ids = self._merge(ids)
        return ids + [EOS_ID] if eos else ids

    def _codepoint_ids(self, data: bytes) -> list[int]:
        """run.c's UTF-8 walk: a byte that is not 0b10xxxxxx starts a codepoint; continuation bytes
        join while the codepoint is under 4 bytes; the buffer empties after every lookup."""
        ids, buf = [], bytearray()
        for pos, byte in enumerate(data):
            if byte & 0xC0 != 0x80:
                buf.clear()
            buf.append(byte)
            next_byte = data[pos + 1] if pos + 1 < len(data) else 0
            if next_byte & 0xC0 == 0x80 and len(buf) < 4:
                continue
            token = self._id_of.get(bytes(buf))
            if token is not None:
                ids.append(token)
            else:
                for b in buf:
                    if b + BYTE_OFFSET >= self.vocab_size:
                        raise ValueError(f"byte 0x{b:02X} has no piece and no byte-fallback id in "
                                         f"a vocab of {self.vocab_size} tokens")
                    ids.append(b + BYTE_OFFSET)
            buf.clear()
        return ids

    def _merge(self, ids: list[int]) -> list[int]:
        """run.c's merge loop in O(n log n): a heap of candidate pairs keyed (-score, left index)
        over a linked list, so the pop order is run.c's (best score first, ties leftmost).
        Entries go stale when either side changes; a version per node detects that."""
        n = len(ids)
        tok, nxt, prv = list(ids), list(range(1, n + 1)), list(range(-1, n - 1))
        version, alive, heap = [0] * n, [True] * n, []

        def push(i: int) -> None:
            if i < 0 or nxt[i] >= n:
                return
            j = nxt[i]
            merged = self._id_of.get(self._pieces[tok[i]] + self._pieces[tok[j]])
            if merged is not None and self.scores[merged] > _NO_MERGE_SCORE:   # NaN: never merges
                heapq.heappush(heap, (-self.scores[merged], i, version[i], version[j], merged))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, version_i, version_j, merged = heapq.heappop(heap)
            j = nxt[i]
            if not alive[i] or j >= n or version[i] != version_i or version[j] != version_j:
                continue
            tok[i], alive[j], nxt[i] = merged, False, nxt[j]
            version[i] += 1
            if nxt[j] < n:
                prv[nxt[j]] = i
            push(prv[i])
            push(i)
        return [t for t, keep in zip(tok, alive) if keep]

    def decode_piece(self, prev_token: int, token: int) -> bytes:
        """run.c's decode(): the piece, minus one leading space right after BOS (prev_token == 1);
        a "<0xNN>" piece becomes that one raw byte. (run.c's sscanf would also accept some
        malformed forms such as "<0x4"; only exact "<0xNN>" pieces count here.)"""
        self._check_id(token)
        piece = self._pieces[token]
        if prev_token == BOS_ID and piece[:1] == b" ":
            piece = piece[1:]
        match = _BYTE_PIECE.fullmatch(piece)
        return bytes([int(match[1], 16)]) if match else piece


class ByteTokenizer(_TokenizerBase):
    """Bytes as tokens for presets without a tokenizer file: 0 <unk>, 1 BOS, 2 EOS, 3..258 bytes
    0..255 (llama2.c's byte-fallback ids). There is no dummy prefix, so decode(encode(s)) == s for
    every s, leading spaces included. Ids 0..2 and >= 259 decode to b""."""

    def __init__(self, vocab_size: int):
        if not isinstance(vocab_size, int) or vocab_size < BYTE_OFFSET + 256:
            raise ValueError(f"ByteTokenizer needs vocab_size >= 259 (3 special ids + 256 bytes), "
                             f"got {vocab_size!r}")
        self.vocab_size = vocab_size

    def encode(self, text: str | bytes, bos: bool = True, eos: bool = False) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return [BOS_ID] * bos + [b + BYTE_OFFSET for b in data] + [EOS_ID] * eos

    def decode_piece(self, prev_token: int, token: int) -> bytes:
        self._check_id(token)
        return bytes([token - BYTE_OFFSET]) if BYTE_OFFSET <= token < BYTE_OFFSET + 256 else b""


def load_tokenizer(path: str | os.PathLike | None, vocab_size: int) -> Llama2cTokenizer | ByteTokenizer:
    """The llama2.c tokenizer at ``path`` with exactly ``vocab_size`` tokens, or a ByteTokenizer."""
    if path is None:
        return ByteTokenizer(vocab_size)
    return Llama2cTokenizer.from_file(path, vocab_size)


def check_tokenizer_matches(tokenizer: _TokenizerBase, vocab_size: int) -> None:
    """Raise ValueError unless every id the tokenizer can produce is a row of the model's embedding
    (real checkpoints pad it: Qwen2 has 151,936 rows for 151,665 tokens). llama2.c's format reads
    exactly the model's vocab_size tokens, so for it the sizes are equal."""
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                         f"{vocab_size} (the tokenizer's ids go up to {tokenizer.vocab_size - 1}): "
                         "they do not match")
