"""Checkpoints that ``torch.load(weights_only=True)`` can read, written atomically.

A training checkpoint (``Trainer.state_dict``) holds the model weights, the model config as a
dict, the train config as a dict, optimiser and AMP-scaler state, the step, the data position
and the RNG states (torch CPU/CUDA, numpy, python) as tensors, and the history so far. Resuming
restores all of it; on CPU, N steps straight and N/2 + resume + N/2 give bit-identical weights.
``export_weights`` keeps only what inference needs.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from ..files import atomic_write
from ..models.cpm import CPMConfig

CHECKPOINT_FORMAT = "cpm_lab.checkpoint.v1"


def save_checkpoint(state: dict, path: str | os.PathLike) -> str:
    """Atomically write a checkpoint dict (temporary file in the same folder, then rename)."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a cpm_lab checkpoint dict with ``torch.load(weights_only=True)``; clear errors for a
    missing file or a file that is not a cpm_lab checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle/zip errors: not a (safe) checkpoint
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ValueError(f"{path!r} is not a readable cpm_lab checkpoint ({reason})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path!r} is not a cpm_lab checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return ckpt


def check_compatible(ckpt_config: dict, model_config: CPMConfig, path: str = "checkpoint") -> None:
    """Raise ValueError if a checkpoint's model config differs from the model's, naming both."""
    mine = model_config.to_dict()
    if ckpt_config == mine:
        return
    if ckpt_config.get("name") != mine["name"] or ckpt_config.get("num_parts") != mine["num_parts"]:
        raise ValueError(f"{path} is preset {ckpt_config.get('name')!r} with {ckpt_config.get('num_parts')} parts, "
                         f"model is {mine['name']!r} with {mine['num_parts']} parts")
    diff = sorted(k for k in set(mine) | set(ckpt_config) if mine.get(k) != ckpt_config.get(k))
    details = ", ".join(f"{k}: checkpoint {ckpt_config.get(k)!r} vs model {mine.get(k)!r}" for k in diff)
    raise ValueError(f"{path} is preset {mine['name']!r} with different options ({details})")


def export_weights(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike) -> str:
    """Write a small inference-only copy of a checkpoint (weights, model and train config, step;
    no optimiser, RNG or history) that ``load_model`` reads; atomic. Returns ``out_path``."""
    ckpt = read_checkpoint(checkpoint_path)
    keep = {k: ckpt[k] for k in ("format", "model", "model_config", "train_config", "step") if k in ckpt}
    save_checkpoint(keep, out_path)
    return os.fspath(out_path)


def rng_state(device: torch.device) -> dict:
    """The python, numpy, torch (and CUDA) RNG states as tensors and numbers, so a checkpoint
    holding them still loads with ``weights_only=True``."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore the RNG states saved by ``rng_state``."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
