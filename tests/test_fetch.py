"""pyinfer.fetch against a local HTTP server on 127.0.0.1: no internet needed, seconds to run."""
from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest

from pyinfer.fetch import (MODELS, ChecksumError, FetchError, FetchedModel, default_cache_dir,
                           fetch_model, find_model, resolve_model_arg)

SHARED_MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
NAME = "stories260K"
SOURCE = MODELS[NAME]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("PYINFER_FETCH_URL", "PYINFER_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def serve():
    """Factory: serve(directory) -> (base_url, requests list of paths). Servers always shut down."""
    started = []

    def start(directory: Path):
        requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, format, *args):  # keep test output quiet
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        started.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/", requests

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def shared_models() -> Path:
    if not all((SHARED_MODELS / f.filename).is_file() for f in SOURCE.files):
        pytest.skip(f"real model files not found in {SHARED_MODELS} (the shared/models folder "
                    f"beside the checkout)")
    return SHARED_MODELS


def test_fetch_downloads_verifies_and_reports_progress(serve, shared_models, tmp_path):
    url, requests = serve(shared_models)
    calls = []
    got = fetch_model(NAME, base_url=url, cache_dir=tmp_path, timeout_s=5,
                      progress=lambda *a: calls.append(a))
    assert isinstance(got, FetchedModel)
    assert got.model_path == tmp_path / NAME / "stories260K.bin"
    assert got.tokenizer_path == tmp_path / NAME / "tok512.bin"
    assert _sha256(got.model_path) == SOURCE.model.sha256
    assert _sha256(got.tokenizer_path) == SOURCE.tokenizer.sha256
    assert sorted(requests) == ["/stories260K.bin", "/tok512.bin"]
    assert sorted(p.name for p in _files_under(tmp_path)) == ["stories260K.bin", "tok512.bin"]
    size = got.model_path.stat().st_size
    assert ("stories260K.bin", size, size) in calls
    done = [c[1] for c in calls if c[0] == "stories260K.bin"]
    assert done == sorted(done)


def test_second_fetch_downloads_nothing(serve, shared_models, tmp_path):
    url, requests = serve(shared_models)
    first = fetch_model(NAME, base_url=url, cache_dir=tmp_path, timeout_s=5)
    n = len(requests)
    assert fetch_model(NAME, base_url=url, cache_dir=tmp_path, timeout_s=5) == first
    assert len(requests) == n


def test_cached_file_with_wrong_hash_is_downloaded_again(serve, shared_models, tmp_path):
    url, requests = serve(shared_models)
    got = fetch_model(NAME, base_url=url, cache_dir=tmp_path, timeout_s=5)
    got.tokenizer_path.write_bytes(b"not a tokenizer")
    requests.clear()
    fetch_model(NAME, base_url=url, cache_dir=tmp_path, timeout_s=5)
    assert requests == ["/tok512.bin"]
    assert _sha256(got.tokenizer_path) == SOURCE.tokenizer.sha256


def test_base_url_from_env(serve, shared_models, tmp_path, monkeypatch):
    url, requests = serve(shared_models)
    monkeypatch.setenv("PYINFER_FETCH_URL", url.rstrip("/"))  # a missing trailing slash is fine
    monkeypatch.setenv("PYINFER_CACHE", str(tmp_path / "c"))
    got = fetch_model(NAME, timeout_s=5)
    assert got.model_path == tmp_path / "c" / NAME / "stories260K.bin"
    assert len(requests) == 2


def test_find_model_and_resolve_model_arg(serve, shared_models, tmp_path):
    assert find_model(NAME, cache_dir=tmp_path) is None
    with pytest.raises(ValueError, match=f"pyinfer fetch {NAME}"):
        resolve_model_arg(NAME, cache_dir=tmp_path)
    url, _ = serve(shared_models)
    got = fetch_model(NAME, base_url=url, cache_dir=tmp_path, timeout_s=5)
    assert find_model(NAME, cache_dir=tmp_path) == got
    assert resolve_model_arg(NAME, cache_dir=tmp_path) == (got.model_path, got.tokenizer_path)
    # an existing path wins, with no tokenizer
    local = shared_models / "stories260K.bin"
    assert resolve_model_arg(str(local), cache_dir=tmp_path) == (local, None)
    with pytest.raises(ValueError, match="no such file or known model"):
        resolve_model_arg(str(tmp_path / "missing.bin"), cache_dir=tmp_path)
    # a cached file that no longer verifies is not "found"
    got.model_path.write_bytes(b"corrupt")
    assert find_model(NAME, cache_dir=tmp_path) is None


def test_checksum_mismatch_leaves_nothing_behind(serve, shared_models, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    data = bytearray((shared_models / "stories260K.bin").read_bytes())
    data[1000] ^= 0xFF
    (served / "stories260K.bin").write_bytes(bytes(data))
    shutil.copy(shared_models / "tok512.bin", served / "tok512.bin")
    url, _ = serve(served)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as err:
        fetch_model(NAME, base_url=url, cache_dir=cache, timeout_s=5)
    msg = str(err.value)
    assert "stories260K.bin" in msg and SOURCE.model.sha256 in msg
    assert hashlib.sha256(bytes(data)).hexdigest() in msg
    assert isinstance(err.value, ValueError)
    assert _files_under(cache) == []


def test_http_404_raises_fetch_error_naming_url(serve, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    url, _ = serve(empty)
    with pytest.raises(FetchError, match=rf"404.*{url}stories260K\.bin"):
        fetch_model(NAME, base_url=url, cache_dir=tmp_path / "cache", timeout_s=5)
    assert _files_under(tmp_path / "cache") == []


def test_unreachable_server_raises_fetch_error(tmp_path):
    with socket.socket() as s:  # grab a free port, then close it so nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(FetchError, match=f"127.0.0.1:{port}"):
        fetch_model(NAME, base_url=url, cache_dir=tmp_path, timeout_s=5)
    assert _files_under(tmp_path) == []


def test_silent_server_times_out(tmp_path):
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
        with pytest.raises(FetchError, match="127.0.0.1"):
            fetch_model(NAME, base_url=url, cache_dir=tmp_path, timeout_s=0.3)
    assert _files_under(tmp_path) == []


def test_unknown_name_lists_known_models(tmp_path):
    with pytest.raises(ValueError, match=NAME):
        fetch_model("no-such-model", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=NAME):
        find_model("no-such-model", cache_dir=tmp_path)


def test_default_cache_dir_precedence(monkeypatch, tmp_path):
    assert default_cache_dir() == Path.home() / ".cache" / "pyinfer"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pyinfer"
    monkeypatch.setenv("PYINFER_CACHE", str(tmp_path / "own"))
    assert default_cache_dir() == tmp_path / "own"


def test_model_table_is_frozen():
    with pytest.raises(TypeError):
        MODELS["other"] = SOURCE  # type: ignore[index]
    with pytest.raises(AttributeError):
        SOURCE.base_url = "http://example.invalid/"  # type: ignore[misc]
    assert SOURCE.model.filename == "stories260K.bin" and SOURCE.tokenizer.filename == "tok512.bin"
