"""pyinfer.tokenizer against a C transcription of llama2.c run.c's encode (tests/c/runc_encode.c),
plus round trips, streaming, the byte tokenizer and every loading error we promise."""
from __future__ import annotations

import math
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyinfer.tokenizer import (ByteTokenizer, Llama2cTokenizer, StreamDecoder,
                               check_tokenizer_matches, load_tokenizer)

SHARED_MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
RUNC_SOURCE = Path(__file__).resolve().parent / "c" / "runc_encode.c"


@pytest.fixture(scope="session")
def tok512_path() -> Path:
    path = SHARED_MODELS / "tok512.bin"
    if not path.exists():
        pytest.skip(f"{path} is missing: the shared model files belong in ../shared/models "
                    "beside the checkout")
    return path


@pytest.fixture(scope="session")
def tok(tok512_path) -> Llama2cTokenizer:
    return Llama2cTokenizer.from_file(tok512_path, vocab_size=512)


@pytest.fixture(scope="session")
def runc(tmp_path_factory):
    """run_c(tokenizer_path, vocab_size, texts, bos, eos) -> ids per text, from the C program."""
    compiler = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if compiler is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH to build tests/c/runc_encode.c")
    exe = tmp_path_factory.mktemp("runc") / "runc_encode"
    subprocess.run([compiler, "-O1", "-o", str(exe), str(RUNC_SOURCE)], check=True)

    def run_c(path, vocab_size: int, texts: list[bytes], bos=True, eos=False) -> list[list[int]]:
        assert all(b"\0" not in t for t in texts), "run.c takes C strings: no NUL inside a text"
        out = subprocess.run([str(exe), str(path), str(vocab_size), str(int(bos)), str(int(eos))],
                             input=b"\0".join(texts), capture_output=True, check=True).stdout
        lines = out.decode().splitlines()
        assert len(lines) == len(texts)
        return [[int(x) for x in line.split()] for line in lines]
    return run_c


def assert_same_as_runc(tokenizer, path, runc, texts, bos=True, eos=False):
    expected = runc(path, tokenizer.vocab_size, texts, bos, eos)
    for text, want in zip(texts, expected):
        got = tokenizer.encode(text, bos=bos, eos=eos)
        assert got == want, f"encode({text!r}, bos={bos}, eos={eos}): ours {got} != run.c {want}"


# ---- the tok512 vocabulary itself -------------------------------------------------------------

def test_tok512_loads_as_llama2c_describes_it(tok, tok512_path):
    assert (tok.vocab_size, tok.max_token_length, tok.bos_id, tok.eos_id) == (512, 7, 1, 2)
    assert tok.vocab[:3] == [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
    assert tok.vocab[3:259] == [b"<0x%02X>" % b for b in range(256)]
    assert len(set(tok.vocab)) == 512, "tok512 has no duplicate pieces, so bsearch is unambiguous"
    assert [p for p in tok.vocab if p.startswith(b"<0x")] == tok.vocab[3:259]
    assert b" " in tok.vocab and not any(b"\0" in p for p in tok.vocab)
    assert Llama2cTokenizer.from_file(str(tok512_path)).vocab == tok.vocab   # vocab_size=None


# ---- encode: byte for byte against run.c --------------------------------------------------------

EXAMPLES = ["Once upon a time", "", "Hello, world!", "The quick brown fox jumps over the lazy dog.",
            "Lily and Tom went to the park. They saw a big dog!", " leading space", "  two",
            "trailing space ", "a", " ", "\n", "tab\there", "line1\nline2\r\n", "\x01\x02\x1b[0m\x7f",
            "é", "café crème", "日本語", "😀", "emoji 😀😀 mixed é日", "<0x41>", "<unk><s></s>",
            "\u200b\ufeff", "x" * 300, "the the the the the"]


def test_encode_matches_runc_on_examples(tok, tok512_path, runc):
    texts = [t.encode("utf-8") for t in EXAMPLES]
    for bos, eos in [(True, False), (False, False), (True, True), (False, True)]:
        assert_same_as_runc(tok, tok512_path, runc, texts, bos, eos)


def test_encode_concrete_ids(tok):
    assert tok.encode("Once upon a time") == [1, 403, 407, 261, 378]
    assert tok.encode("") == [1] and tok.encode("", bos=False, eos=True) == [2]
    assert tok.encode("é", bos=False) == [410, 485]                          # a piece of its own
    assert tok.encode("日", bos=False) == [410, 0xE6 + 3, 0x97 + 3, 0xA5 + 3]   # byte fallback


def test_encode_of_a_4096_char_prompt_matches_runc(tok, tok512_path, runc):
    story = (SHARED_MODELS / "stories260K.greedy.once-upon-a-time.txt").read_text()
    text = (story * (4096 // len(story) + 1))[:4096]
    assert_same_as_runc(tok, tok512_path, runc, [text.encode()])


_PIECES = ["the", " the", "he", " a", "nd", "ed", " ", "  ", "e", "t", ".", "\n", "é", "😀", "<0x",
           "41>", "\x01"]
texts_st = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=40),
    st.lists(st.sampled_from(_PIECES), max_size=20).map("".join),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(texts_st, min_size=1, max_size=8), st.booleans())
def test_encode_matches_runc_on_random_text(tok, tok512_path, runc, texts, bos):
    assert_same_as_runc(tok, tok512_path, runc, [t.encode("utf-8") for t in texts], bos)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=24).map(lambda b: b.replace(b"\0", b"\x80")), min_size=1,
                max_size=8))
def test_encode_matches_runc_on_invalid_utf8_bytes(tok, tok512_path, runc, texts):
    """Stray continuation bytes, over-long runs (the str_len < 4 rule), lone lead bytes."""
    texts += [b"\xe6\x97", b"\x80\x80\x80\x80\x80\x80", b"\xf0\x9f\x98\x80\x80\x80a", b"a\xffb"]
    assert_same_as_runc(tok, tok512_path, runc, texts)


_SCORES = [0.0, -0.0, 1.0, -1.0, -2.0, -1e10, -1e11, math.nan, math.inf]


@st.composite
def small_vocabs(draw):
    """A llama2.c-style vocab over a few characters, scores with ties, -0.0, NaN and <= -1e10,
    and a BOS piece that can merge with the dummy prefix (piece "B ")."""
    extra = draw(st.lists(st.text(alphabet="ab <0x41>é", min_size=1, max_size=4), unique=True,
                          max_size=40))
    pieces = [b"<unk>", b"B", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)]
    pieces += [b" ", b"a", b"B ", b"<0x4", b"1>"]
    pieces += [p for p in dict.fromkeys(e.encode() for e in extra) if p not in pieces]
    scores = [0.0] * 259 + [draw(st.sampled_from(_SCORES)) for _ in pieces[259:]]
    return pieces, scores


def write_tokenizer(path: Path, pieces, scores, max_token_length=None):
    max_len = max(map(len, pieces)) if max_token_length is None else max_token_length
    blob = struct.pack("<i", max_len)
    for piece, score in zip(pieces, scores):
        blob += struct.pack("<fi", score, len(piece)) + piece
    path.write_bytes(blob)
    return path


@settings(max_examples=200, deadline=None)
@given(small_vocabs(), st.lists(st.text(alphabet="ab <0x41>é\x01", max_size=12), min_size=1,
                                 max_size=6), st.booleans())
def test_encode_matches_runc_on_random_vocabs(tmp_path_factory, runc, vocab, texts, bos):
    path = write_tokenizer(tmp_path_factory.mktemp("vocab") / "tok.bin", *vocab)
    tokenizer = Llama2cTokenizer.from_file(path)
    assert_same_as_runc(tokenizer, path, runc, [t.encode() for t in texts], bos)


def test_literal_byte_token_text_can_merge_into_a_byte_token(tmp_path, runc):
    """run.c merges pieces by their text, so text "<0x41>" can become byte token 0x41 (id 68) when
    the vocab has the intermediate pieces; decode then gives "A". Not possible with tok512."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)]
    pieces += [b" ", b"<", b"0", b"x", b"4", b"1", b">", b"<0", b"<0x", b"<0x4", b"1>"]
    path = write_tokenizer(tmp_path / "tok.bin", pieces, [0.0] * 259 + [-1.0] * 11)
    tokenizer = Llama2cTokenizer.from_file(path)
    assert tokenizer.encode("<0x41>", bos=False) == [259, 68]
    assert_same_as_runc(tokenizer, path, runc, [b"<0x41>", b"x<0x41>y"])
    assert tokenizer.decode(tokenizer.encode("<0x41>")) == "A"


def test_four_byte_limit_on_continuation_runs(tmp_path, runc):
    """run.c stops a codepoint at 4 bytes (str_len < 4): "😀" then a stray 0x80 is the 😀 piece
    followed by byte fallback, not five fallback bytes."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)]
    pieces += [b" ", b"a", "😀".encode()]
    path = write_tokenizer(tmp_path / "tok.bin", pieces, [0.0] * 259 + [-1.0] * 3)
    tokenizer = Llama2cTokenizer.from_file(path)
    assert tokenizer.encode(b"\xf0\x9f\x98\x80\x80a", bos=False) == [259, 261, 0x80 + 3, 260]
    assert_same_as_runc(tokenizer, path, runc, [b"\xf0\x9f\x98\x80\x80a", b"\xf0\x9f\x98\x80\x80\x80\x80\x80"])


# ---- decode, round trips, streaming -------------------------------------------------------------

def test_decode_piece_follows_runc(tok):
    space_the = tok.vocab.index(b" the")
    assert tok.decode_piece(1, space_the) == b"the"          # after BOS: one leading space stripped
    assert tok.decode_piece(5, space_the) == b" the"
    assert tok.decode_piece(-1, 3 + 0x41) == b"A" and tok.decode_piece(1, 3 + 0xE6) == b"\xe6"
    assert tok.decode_piece(1, 2) == b"\n</s>\n"
    for bad in (-1, 512, 10**9):
        with pytest.raises(ValueError, match=f"token id {bad} is out of range.*512"):
            tok.decode_piece(1, bad)
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([1, 5, 512])


def test_leading_space_round_trip(tok):
    """The dummy prefix is the one space stripped after BOS, so leading spaces survive; without
    BOS nothing is stripped and the dummy prefix shows."""
    assert tok.encode(" x") == [1, 410, 410, 444]
    for text in (" x", "  x", " ", "\t a"):
        assert tok.decode(tok.encode(text)) == text
        assert tok.decode(tok.encode(text, bos=False)) == " " + text
    assert tok.decode([]) == "" and tok.decode([1]) == ""


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, bos=True, eos=True)) == text + "\n</s>\n"


def _stream_all(tokenizer, ids, safe=False) -> str:
    stream = StreamDecoder(tokenizer, safe=safe)
    return "".join(stream.feed(t) for t in ids) + stream.flush()


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.lists(st.integers(0, 511))))
def test_streaming_equals_whole_decode(tok, text_or_ids):
    ids = tok.encode(text_or_ids) if isinstance(text_or_ids, str) else text_or_ids
    assert _stream_all(tok, ids) == tok.decode(ids)


def test_stream_holds_incomplete_utf8(tok):
    stream = tok.stream()
    assert [stream.feed(t) for t in tok.encode("日", bos=True)] == ["", "", "", "", "日"]
    assert stream.feed(3 + 0xE6) == "" and stream.flush() == "\ufffd"


def test_safe_stream_mirrors_runc_safe_printf(tok):
    """Single-byte pieces that are neither printable nor whitespace are dropped; in the C locale
    that includes every byte >= 0x80, so byte-fallback 日 vanishes as it does from run.c's output,
    while é, a two-byte piece of its own, is printed."""
    ids = tok.encode("a\x01b\t日é\nc")
    assert _stream_all(tok, ids, safe=True) == "ab\té\nc"
    assert _stream_all(tok, ids) == tok.decode(ids) == "a\x01b\t日é\nc"


# ---- byte tokenizer -----------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.text(), st.booleans(), st.booleans())
def test_byte_tokenizer_round_trip(text, bos, eos):
    tokenizer = ByteTokenizer(512)
    ids = tokenizer.encode(text, bos=bos, eos=eos)
    assert ids == [1] * bos + [b + 3 for b in text.encode()] + [2] * eos
    assert tokenizer.decode(ids) == text == _stream_all(tokenizer, ids)


def test_byte_tokenizer_specials_and_errors():
    tokenizer = ByteTokenizer(300)
    assert tokenizer.decode_piece(1, 3 + 0x20) == b" "        # no dummy prefix, nothing stripped
    assert [tokenizer.decode_piece(-1, t) for t in (0, 1, 2, 259, 299)] == [b""] * 5
    with pytest.raises(ValueError, match="token id 300 is out of range"):
        tokenizer.decode([300])
    with pytest.raises(ValueError, match="vocab_size >= 259"):
        ByteTokenizer(258)


# ---- loading errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("cut, token", [(10, 0), (4 + 8 + 3, 0), (4 + 8 + 5, 1), (4 + 8 + 5 + 9, 1),
                                        (6000, None), (6227 - 1, 511)])
def test_truncated_file_names_file_and_token(tok512_path, tmp_path, cut, token):
    path = tmp_path / "cut.bin"
    path.write_bytes(tok512_path.read_bytes()[:cut])
    with pytest.raises(ValueError, match=r"cut\.bin.* token " + (r"\d+" if token is None else f"{token}\\b")):
        Llama2cTokenizer.from_file(path, 512)


@pytest.mark.parametrize("length", [-1, 2**31 - 1, 7000])
def test_absurd_length_field(tok512_path, tmp_path, length):
    data = bytearray(tok512_path.read_bytes())
    offset = 4
    for _ in range(5):                                   # skip tokens 0..4 to token 5's length
        offset += 8 + struct.unpack_from("<i", data, offset + 4)[0]
    struct.pack_into("<i", data, offset + 4, length)
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"bad\.bin: token 5 claims a byte length of {length}"):
        Llama2cTokenizer.from_file(path)


def test_bad_headers(tmp_path):
    (tmp_path / "short.bin").write_bytes(b"\x07\x00")
    with pytest.raises(ValueError, match="short.bin: 2 bytes"):
        Llama2cTokenizer.from_file(tmp_path / "short.bin")
    (tmp_path / "neg.bin").write_bytes(struct.pack("<i", -3))
    with pytest.raises(ValueError, match="neg.bin: negative max_token_length"):
        Llama2cTokenizer.from_file(tmp_path / "neg.bin")


def test_vocab_size_mismatch(tok512_path, tok):
    with pytest.raises(ValueError, match=r"tok512\.bin: truncated at token 512 of the 1000 expected"):
        Llama2cTokenizer.from_file(tok512_path, 1000)
    with pytest.raises(ValueError, match=r"after token 99: the file holds more than vocab_size=100"):
        Llama2cTokenizer.from_file(tok512_path, 100)
    with pytest.raises(ValueError, match=r"tokenizer has 512 tokens .*model's vocab_size is 511"):
        check_tokenizer_matches(tok, 511)
    check_tokenizer_matches(tok, 512)
    check_tokenizer_matches(tok, 32000)      # a padded embedding: every id the tokenizer makes fits
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        Llama2cTokenizer.from_file(tok512_path, 0)


def test_load_tokenizer(tok512_path):
    assert isinstance(load_tokenizer(None, 512), ByteTokenizer)
    loaded = load_tokenizer(tok512_path, 512)
    assert isinstance(loaded, Llama2cTokenizer) and loaded.vocab_size == 512
    with pytest.raises(ValueError, match="tokenizer has 512 tokens but the model's vocab_size is 259"):
        check_tokenizer_matches(loaded, load_tokenizer(None, 259).vocab_size)


def test_vocab_without_space_piece(tmp_path):
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)]
    tokenizer = Llama2cTokenizer.from_file(write_tokenizer(tmp_path / "t.bin", pieces, [0.0] * 259))
    assert tokenizer.encode("") == [1]
    with pytest.raises(ValueError, match="no b' ' piece for the dummy prefix"):
        tokenizer.encode("a")


def test_byte_fallback_beyond_a_small_vocab():
    tokenizer = Llama2cTokenizer([b"<unk>", b"<s>", b"</s>", b" "], [0.0] * 4)
    with pytest.raises(ValueError, match="byte 0x61 has no piece and no byte-fallback id"):
        tokenizer.encode("a")
