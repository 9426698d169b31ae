"""A model spec -> its ModelConfig, reading headers only (no weights): for analysis commands
(roofline, cost) that need a model's shape, not its numbers.

    config_for("path/to/hf_dir")        # or its config.json / a .safetensors / the index in it
    config_for("stories260K.bin")       # llama2.c header (legacy, v1, v2)
    config_for("model.npz")             # the npz's config entry
    config_for("stories260K")           # a fetched model name (pyinfer fetch)
    config_for("llama-7b")              # a preset name (pyinfer.config.PRESETS)
"""
from __future__ import annotations

import os
import zipfile

import numpy as np


def config_for(spec: str):
    """The ModelConfig that ``spec`` names; a ValueError naming the spec when it names none."""
    from ..config import PRESETS
    from ..fetch import MODELS, resolve_model_arg
    spec_s = os.fspath(spec)
    if os.path.exists(spec_s) or spec_s in MODELS:
        path, _ = resolve_model_arg(spec_s)
        return config_of_path(path)
    if spec_s in PRESETS:
        return PRESETS[spec_s]
    from ..fetch import MODELS as known
    raise ValueError(f"no such file, fetched model or preset: {spec_s!r} (known models: "
                     f"{', '.join(sorted(known))}; presets: {', '.join(PRESETS)})")


def config_of_path(path: str | os.PathLike):
    """ModelConfig of a checkpoint file or HF directory, from its header or config only."""
    from . import detect_format, hf, llama2c
    fmt = detect_format(path)
    if fmt == "hf":
        return hf.read_config(path)
    if fmt == "npz":
        return _npz_config(os.fspath(path))
    return llama2c._read_header(path, {"legacy": 0, "v1": 1, "v2": 2}[fmt])[0]


def _npz_config(path: str):
    from .npz import CONFIG_KEY, _config_from_json
    try:
        with np.load(path, allow_pickle=False) as npz:
            if CONFIG_KEY not in npz.files:
                raise ValueError(f"{path} has no {CONFIG_KEY!r} entry")
            entry = npz[CONFIG_KEY]
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path} is not a readable npz file: {e}") from None
    if entry.dtype.kind != "U" or entry.ndim != 0:
        raise ValueError(f"{path}: {CONFIG_KEY!r} entry is not a JSON string")
    return _config_from_json(str(entry), path)
