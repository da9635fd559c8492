"""``cpm-lab train``: train a CPM and evaluate it on a held-out split.

Writes ``OUT/config.json``, ``OUT/history.csv`` (one row per step), ``OUT/checkpoint.pt`` and
``OUT/eval.csv`` (tidy per-stage/per-part metrics of the final model on the held-out ``test``
split of ``--data``, which uses a different seed from the training split). Real data is trained
with the paper's augmentation and a crop cache; synthetic data with neither (see ``cpm_lab.cli``).
"""
from __future__ import annotations

import argparse
import json
import os
import time

from .._argtypes import key_value, nonneg_int, positive_float, positive_int
from . import CLIError, command, ensure_writable_dir, format_pck_table, is_main_process


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from ..models.cpm import PRESETS
    from ..train import STRATEGIES

    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model preset (default: tiny)")
    p.add_argument("--model", type=key_value, action="append", default=[], metavar="FIELD=VALUE",
                   help="override a CPMConfig field of the preset, e.g. --model input_size=160 --model "
                        "num_stages=4 (repeatable; recorded in config.json and the checkpoint)")
    p.add_argument("--data", default="synthetic", help="dataset spec, e.g. synthetic or synthetic:hard")
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument("--steps", type=positive_int, help="optimiser steps (default: the preset's budget)")
    p.add_argument("--strategy", default="end_to_end", choices=STRATEGIES, help="training strategy")
    p.add_argument("--batch-size", type=positive_int, help="GLOBAL batch size (default: the preset's)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: the optimiser's)")
    p.add_argument("--optimizer", choices=("auto", "adam", "sgd"), default="auto")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the model init, data order and split")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA only)")
    p.add_argument("--eval-every", type=nonneg_int, default=0, help="evaluate every N steps (0 = only at the end)")
    p.add_argument("--eval-size", type=positive_int, default=512, help="held-out items for evaluation")
    p.add_argument("--checkpoint-every", type=nonneg_int, default=0, help="also checkpoint every N steps")
    p.add_argument("--workers", type=nonneg_int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy CPU)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (same settings)")
    p.add_argument("--stop-at", type=positive_int, help="stop after this step (resume later with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="the paper's augmentation: zoom 0.7-1.3, rotation +-40 deg, flip with left/right "
                        "swap, on the device (default: on for real data, off for synthetic)")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None,
                   help="keep decoded real-data crops in memory as uint8, N x S x S x 3 bytes "
                        "(default: on for real data; synthetic data is never cached)")


def augment_settings(augment) -> dict:
    """What ``config.json`` records about augmentation: ``enabled`` plus, when on, the
    ``Augment`` parameters (zoom range, maximum rotation in degrees, flip, ...)."""
    if augment is None:
        return {"enabled": False}
    return {"enabled": True, "scale": list(augment.scale), "rotation_deg": augment.rotation,
            "flip": augment.flip, "flip_prob": augment.flip_prob, "translate": augment.translate,
            "padding_mode": augment.padding_mode}


def _train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from ..data.augment import Augment
    from ..data.specs import is_real, make_dataset
    from ..inference import protocol_title
    from ..models.cpm import CPM
    from ..train import TrainConfig, Trainer, setup_distributed
    from ..utils import seed_everything

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    main_process = is_main_process()
    out = ensure_writable_dir(args.out) if main_process else args.out
    ckpt_path = os.path.join(out, "checkpoint.pt")
    if args.resume and not os.path.isfile(ckpt_path):
        raise CLIError(f"--resume: no checkpoint at {ckpt_path!r}")
    real = is_real(args.data)
    augment = Augment() if (real if args.augment is None else args.augment) else None
    cache = real if args.cache is None else args.cache
    if cache and not real:
        raise CLIError(f"--cache: {args.data!r} is not a real dataset (synthetic items are generated on the "
                       f"fly); only real data is cached")
    if args.resume:
        _check_resume_augment(os.path.join(out, "config.json"), augment_settings(augment))
    overrides = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, amp=args.amp).items()
                 if v is not None}
    config = TrainConfig.for_preset(args.preset, strategy=args.strategy, optimizer=args.optimizer, seed=args.seed,
                                    device=args.device, eval_every=args.eval_every, checkpoint=ckpt_path,
                                    checkpoint_every=args.checkpoint_every, num_workers=args.workers,
                                    progress=not args.no_progress, **overrides)
    if args.stop_at is not None and args.stop_at > config.steps:
        raise CLIError(f"--stop-at {args.stop_at} is beyond --steps {config.steps}")
    seed_everything(args.seed)
    model = CPM.from_preset(args.preset, **dict(args.model))
    size = model.config.input_size
    train_set = make_dataset(args.data, size, split="train", seed=args.seed, cache=cache)
    eval_set = make_dataset(args.data, size, split="test", seed=args.seed, length=args.eval_size,
                            cache=cache and args.eval_every > 0)  # evaluated once: nothing to reuse

    rank, world, device = setup_distributed(args.device)
    config.device = str(device)
    try:
        trainer = Trainer(model, train_set, config, eval_set=eval_set, augment=augment)
        if rank == 0:
            with open(os.path.join(out, "config.json"), "w") as f:
                json.dump({"preset": args.preset, "data": args.data, "model": model.config.to_dict(),
                           "train": config.to_dict(), "world_size": world,
                           "per_rank_batch_size": config.batch_size // world,
                           "train_items": len(train_set), "eval_items": len(eval_set),
                           "augment": augment_settings(augment), "cache": cache}, f, indent=2)
            print(f"training {args.preset} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
                  f"{args.data}, {config.steps} steps x batch {config.batch_size}, strategy {config.strategy}, "
                  f"augment {'on' if augment else 'off'}, crop cache {'on' if cache else 'off'}, "
                  f"device {device}" + (f", {world} processes" if world > 1 else ""), flush=True)
        t0 = time.perf_counter()
        history = trainer.fit(resume=ckpt_path if args.resume else None, until=args.stop_at)
        elapsed = time.perf_counter() - t0
        if rank == 0:
            history.to_csv(os.path.join(out, "history.csv"), index=False)
            if trainer.step < config.steps:
                print(f"stopped at step {trainer.step} of {config.steps} after {elapsed:.1f} s; "
                      f"continue with --resume. Checkpoint: {ckpt_path}")
                return 0
            evals = trainer.evals
            final = (evals[evals["step"] == config.steps].drop(columns="step") if len(evals)
                     and (evals["step"] == config.steps).any() else trainer.evaluate(eval_set))
            final.to_csv(os.path.join(out, "eval.csv"), index=False)
            where = (f"protocol: {protocol_title('gt-crop')}; run `cpm-lab eval --protocol lsp` for the "
                     "official test" if real else "the generator's own frames")
            print(format_pck_table(final, title=f"held-out {eval_set.split_description}, {len(eval_set)} images, "
                                                f"after {config.steps} steps, {elapsed:.1f} s of training ({where})"))
            print(f"wrote {out}/config.json, history.csv, checkpoint.pt, eval.csv")
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


command("train", "train a CPM and evaluate it on a held-out split", _train_arguments)(_train)


def _check_resume_augment(config_path: str, wanted: dict) -> None:
    """CLIError when the run being resumed was trained with augmentation on and now off (or
    the reverse); the checkpoint itself does not record it."""
    try:
        with open(config_path) as f:
            before = json.load(f).get("augment")
    except (OSError, ValueError):
        return  # no readable config.json: nothing to compare with
    if isinstance(before, dict) and bool(before.get("enabled")) != wanted["enabled"]:
        was = "on" if before.get("enabled") else "off"
        raise CLIError(f"--resume: {config_path} says the run was trained with augmentation {was}; "
                       f"resume with {'--augment' if was == 'on' else '--no-augment'}")
