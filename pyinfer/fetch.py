"""Download known small models into a local cache, verified by sha256.

``fetch_model("stories260K")`` streams each file over HTTP(S) into a temporary file
beside its destination, hashing as it goes, and renames it into place only when the
hash matches; a file already cached with the right hash is not downloaded again.
``find_model`` / ``resolve_model_arg`` let the CLI accept a model by name or path.
Stdlib only; nothing is read from the network at import time.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Optional

CHUNK_BYTES = 1 << 16
ProgressFn = Callable[[str, int, Optional[int]], None]  # (filename, bytes_done, bytes_total or None)


class FetchError(RuntimeError):
    """A download failed: HTTP error, unreachable server, timeout or truncated body."""


class ChecksumError(ValueError):
    """A downloaded file's sha256 is not the one recorded in ``MODELS``."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a fetchable model: its name under the base URL and its sha256 (hex)."""

    filename: str
    sha256: str


@dataclass(frozen=True)
class ModelSource:
    """Where a named model lives and which of its files is the checkpoint / tokenizer."""

    name: str
    base_url: str
    model: RemoteFile
    tokenizer: RemoteFile

    @property
    def files(self) -> tuple[RemoteFile, RemoteFile]:  # download order: model first
        return (self.model, self.tokenizer)


@dataclass(frozen=True)
class FetchedModel:
    """Local, sha256-verified paths of a fetched model."""

    model_path: Path
    tokenizer_path: Path


MODELS: Mapping[str, ModelSource] = MappingProxyType({
    "stories260K": ModelSource(
        name="stories260K",
        base_url="https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/",
        model=RemoteFile("stories260K.bin",
                         "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"),
        tokenizer=RemoteFile("tok512.bin",
                             "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"),
    ),
})


def default_cache_dir() -> Path:
    """$PYINFER_CACHE if set, else $XDG_CACHE_HOME/pyinfer, else ~/.cache/pyinfer."""
    if os.environ.get("PYINFER_CACHE"):
        return Path(os.environ["PYINFER_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "pyinfer"
    return Path.home() / ".cache" / "pyinfer"


def _source(name: str) -> ModelSource:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None


def _model_dir(name: str, cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / name


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_verified(path: Path, expected_sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == expected_sha256


def _download(url: str, dest: Path, expected_sha256: str, timeout_s: float,
              progress: ProgressFn | None) -> None:
    """Stream ``url`` into a temp file in ``dest``'s folder, verify, then rename atomically."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest, done = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    while chunk := resp.read(CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(dest.name, done, total)
            except urllib.error.HTTPError as e:
                raise FetchError(f"HTTP {e.code} {e.reason} fetching {url}") from e
            except urllib.error.URLError as e:
                raise FetchError(f"cannot reach {url}: {e.reason}") from e
            except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
                raise FetchError(f"download of {url} failed after {done} bytes: "
                                 f"{e or type(e).__name__} (timeout_s={timeout_s})") from e
            if total is not None and done != total:
                raise FetchError(f"download of {url} truncated: got {done} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise ChecksumError(f"sha256 mismatch for {dest.name} from {url}: "
                                f"expected {expected_sha256}, got {actual} ({done} bytes)")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_model(name: str, base_url: str | None = None,
                cache_dir: str | os.PathLike | None = None, timeout_s: float = 30,
                progress: ProgressFn | None = None) -> FetchedModel:
    """Make sure the files of model ``name`` are in ``cache_dir/name/``, verified; return their paths.

    ``base_url`` defaults to $PYINFER_FETCH_URL, then the table's URL. ``timeout_s`` bounds
    each blocking network operation. ``progress(filename, bytes_done, bytes_total)`` is called
    after each chunk downloaded (``bytes_total`` is None when the server sends no length).
    Raises ValueError (unknown name), FetchError (network/HTTP), ChecksumError (bad hash).
    """
    source = _source(name)
    if not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    base = base_url or os.environ.get("PYINFER_FETCH_URL") or source.base_url
    base = base if base.endswith("/") else base + "/"
    folder = _model_dir(name, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for remote in source.files:
        dest = folder / remote.filename
        if not _is_verified(dest, remote.sha256):
            _download(base + remote.filename, dest, remote.sha256, timeout_s, progress)
    return FetchedModel(folder / source.model.filename, folder / source.tokenizer.filename)


def find_model(name: str, cache_dir: str | os.PathLike | None = None) -> FetchedModel | None:
    """Paths of model ``name`` if all its files are cached with the right sha256, else None.

    Raises ValueError for a name not in ``MODELS``.
    """
    source = _source(name)
    folder = _model_dir(name, cache_dir)
    if all(_is_verified(folder / f.filename, f.sha256) for f in source.files):
        return FetchedModel(folder / source.model.filename, folder / source.tokenizer.filename)
    return None


def resolve_model_arg(arg: str | os.PathLike, cache_dir: str | os.PathLike | None = None
                      ) -> tuple[Path, Path | None]:
    """Turn a CLI ``--model`` value into ``(model_path, tokenizer_path or None)``.

    An existing file, or a Hugging Face checkpoint directory (one holding config.json), is
    returned as is, with no tokenizer; a fetched model name gives its cached paths; a known but
    unfetched name, or anything else, raises ValueError.
    """
    path = Path(arg)
    if path.is_file():
        return path, None
    if path.is_dir():
        if (path / "config.json").is_file():
            return path, None
        raise ValueError(f"{arg} is a directory without config.json: pass a checkpoint file, a "
                         "Hugging Face checkpoint directory or a known model name")
    name = str(arg)
    if name in MODELS:
        found = find_model(name, cache_dir)
        if found is None:
            raise ValueError(f"model {name!r} has not been fetched (or its files fail the sha256 "
                             f"check) in {_model_dir(name, cache_dir)}; run `pyinfer fetch {name}` first")
        return found.model_path, found.tokenizer_path
    if path.exists():
        raise ValueError(f"{arg} is not a file or directory; pass a checkpoint file, a Hugging Face "
                         "checkpoint directory or a known model name")
    raise ValueError(f"no such file or known model: {arg!r} "
                     f"(known models: {', '.join(sorted(MODELS))})")
