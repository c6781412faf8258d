"""Checkpoints: one folder per save, written whole under a temporary name, then published by renaming.

    out_dir/checkpoints/step-00000300/model.safetensors   weights (tied tensors stored once, see `aliases`)
                                      trainer.pt          optimizer, step, RNG states, loss history (torch.save)
                                      config.json         {"train": TrainConfig, "model": ModelConfig or null}
    out_dir/checkpoints/latest                            "step-00000300": the checkpoint to resume from

A save fills `.tmp-*/`, renames it to `step-N/`, then replaces `latest` (os.replace), then deletes older
folders. A failure at any point leaves `latest` naming a complete checkpoint, and no temporary folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..models.config import atomic_write_text

CHECKPOINTS = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer.pt"
CONFIG = "config.json"


def save_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    model: nn.Module,
    trainer_state: dict[str, Any],
    configs: dict[str, Any],
) -> Path:
    """Writes the checkpoint of `step`, points `latest` at it, removes the older ones; returns its folder."""
    root = Path(out_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        tensors, aliases = shareable_state_dict(model)
        save_file(tensors, tmp / WEIGHTS, metadata={"aliases": json.dumps(aliases)})
        torch.save(trainer_state, tmp / TRAINER_STATE)
        (tmp / CONFIG).write_text(json.dumps(configs, indent=2) + "\n")
        final = root / name
        if final.exists():  # the same step saved again (a re-run of a finished run): it is not `latest` then
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, name + "\n")
    for old in root.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The folder `latest` names, or None when out_dir holds no checkpoint."""
    pointer = Path(out_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / WEIGHTS).is_file() or not (path / TRAINER_STATE).is_file():
        raise ValueError(f"out_dir: {pointer} names {path.name}, which is not a complete checkpoint")
    return path


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Loads the weights into `model` (strict) and returns (trainer_state, configs)."""
    path = Path(path)
    model.load_state_dict(load_weights(path / WEIGHTS), strict=True)
    trainer_state = torch.load(path / TRAINER_STATE, map_location=map_location, weights_only=True)
    configs = json.loads((path / CONFIG).read_text())
    return trainer_state, configs


def shareable_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict with each shared tensor stored once (safetensors refuses shared memory).

    Returns (tensors, aliases): aliases maps a dropped name to the kept name it is tied to (lm_head.weight ->
    embedding.weight). A tensor overlapping another's memory without being the same view is copied.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple, str] = {}
    storages: set[tuple] = set()
    for name, t in model.state_dict().items():
        t = t.detach()
        storage = (t.device, t.untyped_storage().data_ptr())
        view = (*storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and view in views:
            aliases[name] = views[view]
            continue
        views[view] = name
        tensors[name] = t.clone() if storage in storages else t.contiguous()
        storages.add(storage)
    return {k: v.cpu() for k, v in tensors.items()}, aliases


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a file written by `save_checkpoint`, the tied names restored."""
    state = load_file(path, device="cpu")
    with safe_open(path, framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for alias, target in aliases.items():
        state[alias] = state[target]
    return state
