"""Run files written before ``[[tasks]]``: the error that shows how to write them now.

Before 0.2 a run file trained images with ``[data]``, ``[loss]`` and ``[eval]`` sections, and
stage 2 with ``[video]``. Those sections are gone; :func:`legacy_message` translates what a
file says into the equivalent ``[[tasks]]`` tables, so the error is the fix:

    [data] source/batch_size/crop_*/heldout  -> data = { source = ..., ... }
    [loss] rec_weight * terms, kl_weight     -> losses = [{ name, weight }, { name = "kl" }]
    [loss] sem_weight * semantic             -> a text_alignment task's embedding losses
    [eval] metrics, grid_images              -> metrics = [...], previews = N
    [video] enabled                          -> a video_reconstruction task, [model] expand_latent
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["LEGACY_SECTIONS", "legacy_message"]

LEGACY_SECTIONS = ("data", "loss", "eval", "video")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def _is_store(source: str) -> bool:
    return "://" in source or source.rstrip("/").endswith(".zarr")


def _image_data(data: Mapping[str, Any]) -> dict[str, Any]:
    source = str(data.get("source", "photos"))
    out: dict[str, Any]
    if source == "digits":
        out = {"source": "digits"}
        renames = {"digit_size": "size", "digit_classes": "classes"}
        for old in ("digit_size", "digit_classes", "heldout_fraction", "batch_size"):
            if old in data:
                out[renames.get(old, old)] = data[old]
        return out
    if source == "photos":
        out = {"source": "photos"}
    elif _is_store(source):
        out = {"source": "media_store", "url": source}
        if data.get("storage_options"):
            out["storage_options"] = data["storage_options"]
    else:
        out = {"source": "image_folder", "path": source}
    for key in ("batch_size", "crop_min", "crop_max", "heldout"):
        if key in data:
            out[key] = data[key]
    return out


def _terms(terms: Any, scale: float) -> list[dict[str, Any]]:
    out = []
    for t in terms or ():
        term = {"name": t.get("name", "?"), "weight": float(t.get("weight", 1.0)) * scale}
        if t.get("params"):
            term["params"] = t["params"]
        out.append(term)
    return out


def _table(fields: Mapping[str, Any]) -> str:
    return "[[tasks]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in fields.items())


def legacy_message(data: Mapping[str, Any], path: str) -> str:
    """The ``ConfigError`` text for an old-style run file: what changed and its translation."""
    old_data, loss = data.get("data", {}), data.get("loss", {})
    ev, video = data.get("eval", {}), data.get("video", {})
    rec, kl = float(loss.get("rec_weight", 0.2)), float(loss.get("kl_weight", 1e-8))
    losses = _terms(loss.get("terms", [{"name": "l1"}]), rec)
    if kl > 0:
        losses.append({"name": "kl", "weight": kl})
    semantic = _terms(loss.get("semantic"), float(loss.get("sem_weight", 1.0)))
    first: dict[str, Any] = {
        "name": "text_alignment" if semantic else "image_reconstruction",
        "data": _image_data(old_data),
        "losses": losses + semantic,
    }
    if "metrics" in ev:
        first["metrics"] = ev["metrics"]
    if "grid_images" in ev:
        first["previews"] = ev["grid_images"]
    tables = [_table(first)]
    model_line = ""
    if video.get("enabled"):
        vdata: dict[str, Any] = {"source": "video_files"}
        sources = list(video.get("sources", ()))  # none given: the source's default clips
        if len(sources) == 1 and _is_store(sources[0]):
            vdata = {"source": "media_store", "url": sources[0], "frames": 16}
        elif sources:
            vdata["clips"] = sources
        for key in ("heldout", "max_frames", "max_side", "eval_frames"):
            if key in video and vdata["source"] == "video_files":
                vdata[key] = video[key]
        for key in ("batch_size", "frames", "strides", "crop_min", "crop_max"):
            if key in video:
                vdata[key] = video[key]
        second: dict[str, Any] = {
            "name": "video_reconstruction",
            "data": vdata,
            "losses": [{"name": "l1", "weight": rec}] + ([{"name": "kl", "weight": kl}] * (kl > 0)),
        }
        for key in ("metrics", "tile_frames", "kv_cache_steps", "fps"):
            if key in video:
                second[key] = video[key]
        tables.append(_table(second))
        model_line = f"\n[model]\nexpand_latent = {int(video.get('latent_dim', 48))}\n"
    sections = ", ".join(f"[{s}]" for s in LEGACY_SECTIONS if s in data)
    return (
        f"run file {path!r} uses {sections}, which run files no longer have: a run lists the "
        "tasks it trains as [[tasks]] tables (docs/training.md#run-files). Replace those "
        "sections with:\n\n" + "\n".join(tables) + model_line
    )
