"""Checkpoints that ``torch.load(weights_only=True)`` can read, written atomically, checked on load.

A training checkpoint (``Trainer.state_dict``) holds the model weights, the model config as a
dict, the train config as a dict, optimiser and AMP-scaler state, the step, the data position
and the RNG states (torch CPU/CUDA, numpy, python) as tensors, and the history so far. Resuming
restores all of it; on CPU, N steps straight and N/2 + resume + N/2 give bit-identical weights.
``export_weights`` keeps only what inference needs.

Integrity: ``save_checkpoint`` stores ``weights_sha256``, a SHA-256 of the weights (every tensor of
``state["model"]`` in key order: name, dtype, shape and bytes), and ``read_checkpoint``, the one
door every loader goes through (``Trainer.load_checkpoint``, ``cpm_lab.inference.load_model``,
``export_weights``), recomputes it: a changed byte is refused with one line naming the file (the
zip container's own checksums are not verified by torch). Checkpoints saved before the hash
existed still load (``weights_sha256`` absent). Non-finite weights are refused whatever the hash.

Resuming: ``resume_diff`` says which settings a resumed run may change (``RESUME_FREE``: where and
how fast it runs, how often it evaluates and saves, and more ``steps`` for a single-phase
strategy) and which it may not (everything that changes what the run computes).
"""
from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch

from ..files import atomic_write
from ..models.cpm import CPMConfig

CHECKPOINT_FORMAT = "cpm_lab.checkpoint.v1"
#: ``TrainConfig`` fields a resumed run may change: they do not change what the run computes.
RESUME_FREE = frozenset({"device", "amp", "amp_dtype", "channels_last", "num_workers", "eval_every",
                         "eval_thresholds", "eval_normalize", "checkpoint", "checkpoint_every",
                         "checkpoint_minutes", "progress"})


def weights_digest(weights: dict) -> str:
    """SHA-256 (hex) of a state dict: each entry's name, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for name, value in weights.items():
        if not isinstance(value, torch.Tensor):
            h.update(f"{name}|{value!r}\n".encode())
            continue
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_checkpoint(state: dict, path: str | os.PathLike) -> str:
    """Atomically write a checkpoint dict (temporary file in the same folder, then rename), adding
    ``weights_sha256`` when it holds ``model`` weights. A full disk raises ``files.DiskFull`` and
    leaves the previous checkpoint intact."""
    if isinstance(state.get("model"), dict):
        state = {**state, "weights_sha256": weights_digest(state["model"])}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object, so a full disk is an OSError with its errno
            torch.save(state, f)
    return atomic_write(path, write, what="checkpoint")


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words (never torch's advice to load unsafely)."""
    text = str(exc)
    if "Unsupported global" in text:
        return ("it holds Python objects or code, which the safe loader refuses (nothing in it was run); "
                "cpm_lab checkpoints hold tensors and plain data only")
    if isinstance(exc, EOFError) or "zip archive" in text or "central directory" in text:
        return "the file is empty, truncated or damaged (an incomplete archive)"
    return "its bytes are not a torch checkpoint (a damaged file, or another kind of file)"


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a cpm_lab checkpoint dict with ``torch.load(weights_only=True)`` and check it.

    Raises (one line each, naming the file): FileNotFoundError / IsADirectoryError for a missing
    file or a folder; ValueError for a file that is not a (complete) checkpoint, holds no
    ``model`` or ``model_config``, whose weights differ from its ``weights_sha256``, or whose
    weights are not finite.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint path {path!r} is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle/zip errors: not a (safe, complete) checkpoint
        raise ValueError(f"{path!r} is not a readable cpm_lab checkpoint: {_load_failure(exc)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path!r} is not a cpm_lab checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{path!r} is a cpm_lab checkpoint without weights ('model')")
    if not isinstance(ckpt.get("model_config"), dict):
        raise ValueError(f"{path!r} has no 'model_config' (the architecture its weights belong to), so no "
                         f"model can be built from it")
    digest = ckpt.get("weights_sha256")
    if digest is not None and digest != weights_digest(ckpt["model"]):
        raise ValueError(f"{path!r} is corrupt: its weights differ from the content hash recorded when it was "
                         f"saved (the file was changed or damaged); use another copy or train again")
    bad = [k for k, v in ckpt["model"].items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ValueError(f"{path!r} holds non-finite weights (NaN or inf in {bad[0]}{more}); refusing to use them")
    return ckpt


def check_resumable(ckpt: dict, path: str | os.PathLike) -> None:
    """ValueError unless a checkpoint dict (``read_checkpoint``) holds a training state to resume."""
    missing = [k for k in ("train_config", "step", "optimizer", "rng") if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {os.fspath(path)!r} holds no training state ({', '.join(missing)} missing): "
                         f"it can be evaluated, not resumed")


def model_difference(ckpt_config: dict, model_config: CPMConfig) -> str | None:
    """None when a checkpoint's model config equals the model's, else how they differ, e.g.
    "preset 'tiny' with 14 parts, model is 'small' with 14 parts"."""
    mine = model_config.to_dict()
    if ckpt_config == mine:
        return None
    if ckpt_config.get("name") != mine["name"] or ckpt_config.get("num_parts") != mine["num_parts"]:
        return (f"preset {ckpt_config.get('name')!r} with {ckpt_config.get('num_parts')} parts, "
                f"model is {mine['name']!r} with {mine['num_parts']} parts")
    diff = sorted(k for k in set(mine) | set(ckpt_config) if mine.get(k) != ckpt_config.get(k))
    details = ", ".join(f"{k}: checkpoint {ckpt_config.get(k)!r} vs model {mine.get(k)!r}" for k in diff)
    return f"preset {mine['name']!r} with different options ({details})"


def check_compatible(ckpt_config: dict, model_config: CPMConfig, path: str = "checkpoint") -> None:
    """Raise ValueError if a checkpoint's model config differs from the model's, naming both."""
    why = model_difference(ckpt_config, model_config)
    if why is not None:
        raise ValueError(f"{path} is {why}")


def resume_diff(saved_model: dict, saved_train: dict, model_config: CPMConfig, config) -> tuple[dict, list[str]]:
    """Compare the run a checkpoint comes from (its model and train configs, as dicts) with the run
    about to resume it (``model_config``, ``config``: a ``TrainConfig``).

    Returns ``(changes, refused)``: ``changes`` maps each setting a resume may change to
    ``(old, new)`` (``RESUME_FREE`` fields, and a larger ``steps`` when only the last phase of the
    strategy grows: the learning rate is a pure function of the step and the total, so the rest of
    the run follows the schedule planned for the new total); ``refused`` describes each difference
    that would change what the run computes (model, lr, optimiser, batch size, seed, strategy, a
    shorter run, ...). Older dicts are read through ``from_dict``: fields they lack count as their
    defaults.
    """
    from .config import TrainConfig
    from .phases import plan_phases

    refused: list[str] = []
    why = model_difference(CPMConfig.from_dict(saved_model).to_dict(), model_config)
    if why is not None:
        refused.append(f"the checkpoint is {why}")
    old, new = TrainConfig.from_dict(saved_train).to_dict(), config.to_dict()
    changes: dict[str, tuple] = {}
    for key in new:
        if old.get(key) == new[key]:
            continue
        if key in RESUME_FREE:
            changes[key] = (old.get(key), new[key])
        elif key != "steps":
            refused.append(f"{key}={old.get(key)!r} (now {new[key]!r})")
        elif old["strategy"] != new["strategy"]:
            changes[key] = (old[key], new[key])  # the strategy itself is refused
        elif new[key] < old[key]:
            refused.append(f"steps={old[key]} (now {new[key]}): a run cannot be shortened, its schedule was planned "
                           f"for {old[key]} steps (stop early instead)")
        else:
            plans = [plan_phases(config.strategy, model_config.num_stages, n, config.finetune_fraction,
                                 config.intermediate_supervision) for n in (old[key], new[key])]
            if plans[0][:-1] != plans[1][:-1] or plans[0][-1].start != plans[1][-1].start:
                refused.append(f"steps={old[key]} (now {new[key]}): strategy {config.strategy!r} splits the steps "
                               f"into phases whose boundaries would move")
            else:
                changes[key] = (old[key], new[key])
    return changes, refused


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
