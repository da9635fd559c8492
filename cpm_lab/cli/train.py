"""``cpm-lab train``: train a CPM and evaluate it on a held-out split.

Writes ``OUT/config.json``, ``OUT/history.csv`` (one row per step), ``OUT/checkpoint.pt`` and
``OUT/eval.csv`` (tidy per-stage/per-part metrics of the final model on the held-out ``test``
split of ``--data``, which uses a different seed from the training split). Real data is trained
with the paper's augmentation and a crop cache; synthetic data with neither (see ``cpm_lab.cli``).

No lost work: ``OUT`` is locked while a run writes there (``files.output_lock``: a second run is
refused, naming the first one's PID). The checkpoint is written every ``--checkpoint-minutes``
(10 by default) and every ``--checkpoint-every`` steps, and when the run is stopped: Ctrl-C or
SIGTERM end it after the current step, a bad sample ends it before the step that would use it;
each time the message says what was kept and prints the exact command that resumes it.

``--resume`` continues ``OUT/checkpoint.pt``. Before anything is written it checks that the run
is the same one (``train.checkpoint.resume_diff`` plus ``--data`` and augmentation from
``OUT/config.json``) and refuses, naming every setting with its old and new value, when a
setting would change what the run computes (preset or ``--model``, ``--data``, ``--lr``,
``--optimizer``, ``--strategy``, ``--seed``, ``--batch-size``, augmentation, ...). Settings that
only change how it runs (device, workers, checkpoint and evaluation periods, ``--skip-bad``,
``--cache``) and more ``--steps`` (an extension; without ``--steps`` the run keeps its own
total) are accepted and appended to the ``history`` list of ``config.json`` as ``{time, argv,
event, from_step, changes}``. Extending re-plans the learning-rate schedule for the new total
(the rate is a pure function of the step and the total): from the resumed step on, the run
follows the schedule of a run planned that long, so the rate jumps (up, for a cosine decay that
had finished) at the resumed step; strategies whose phases would move are not extended.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import time
import warnings

from .._argtypes import key_value, nonneg_int, positive_float, positive_int
from . import PROG, CLIError, command, ensure_writable_dir, format_pck_table, is_main_process


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from ..models.cpm import PRESETS
    from ..train import STRATEGIES

    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model preset (default: tiny)")
    p.add_argument("--model", type=key_value, action="append", default=[], metavar="FIELD=VALUE",
                   help="override a CPMConfig field of the preset, e.g. --model input_size=160 --model "
                        "num_stages=4 (repeatable; recorded in config.json and the checkpoint)")
    p.add_argument("--data", default="synthetic", help="dataset spec, e.g. synthetic or synthetic:hard")
    p.add_argument("--out", required=True, help="output directory (created if needed; locked while training)")
    p.add_argument("--steps", type=positive_int,
                   help="optimiser steps (default: the preset's budget; with --resume, the run's own total; more "
                        "steps extend it)")
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
    p.add_argument("--checkpoint-minutes", type=float, default=10.0,
                   help="also checkpoint when this many minutes have passed since the last one (default 10; 0 = "
                        "off)")
    p.add_argument("--workers", type=nonneg_int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy CPU)")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/checkpoint.pt: same settings (checked), more --steps allowed")
    p.add_argument("--stop-at", type=positive_int, help="stop after this step (resume later with --resume)")
    p.add_argument("--skip-bad", action="store_true",
                   help="real data: open every image first and leave out unreadable images and invalid "
                        "annotations, with a warning that counts them (default: a bad sample stops the run, "
                        "after saving it)")
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


def resume_command(args: argparse.Namespace) -> str:
    """The command line that continues this run: the same arguments, ``--resume`` instead of
    ``--stop-at``."""
    argv, drop_next = [], False
    for a in args._argv:
        if drop_next or a == "--resume" or a.startswith("--stop-at="):
            drop_next = False
            continue
        drop_next = a == "--stop-at"
        if not drop_next:
            argv.append(a)
    return f"{PROG} {shlex.join(argv + ['--resume'])}"


def _train(args: argparse.Namespace) -> int:
    if args.checkpoint_minutes < 0:
        raise CLIError(f"{PROG} train: --checkpoint-minutes must be >= 0, got {args.checkpoint_minutes:g}")
    if not is_main_process():  # ranks > 0 of a torchrun job write nothing
        return _run(args, args.out)
    from ..files import output_lock

    out = ensure_writable_dir(args.out)
    with output_lock(out, command=f"{PROG} {shlex.join(args._argv)}"):
        return _run(args, out)


def _run(args: argparse.Namespace, out: str) -> int:
    import torch
    import torch.distributed as dist

    from ..data.augment import Augment
    from ..data.specs import is_real, make_dataset
    from ..models.cpm import CPM
    from ..train import TrainConfig, setup_distributed
    from ..utils import seed_everything

    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt_path = os.path.join(out, "checkpoint.pt")
    previous = _previous_run(args, out, ckpt_path)
    real = is_real(args.data)
    augment = Augment() if (real if args.augment is None else args.augment) else None
    cache = real if args.cache is None else args.cache
    if cache and not real:
        raise CLIError(f"--cache: {args.data!r} is not a real dataset (synthetic items are generated on the "
                       f"fly); only real data is cached")
    steps = args.steps or (previous[0]["train_config"]["steps"] if previous else None)
    overrides = {k: v for k, v in dict(steps=steps, batch_size=args.batch_size, lr=args.lr, amp=args.amp).items()
                 if v is not None}
    config = TrainConfig.for_preset(args.preset, strategy=args.strategy, optimizer=args.optimizer, seed=args.seed,
                                    device=args.device, eval_every=args.eval_every, checkpoint=ckpt_path,
                                    checkpoint_every=args.checkpoint_every, num_workers=args.workers,
                                    checkpoint_minutes=args.checkpoint_minutes, progress=not args.no_progress,
                                    **overrides)
    if args.stop_at is not None and args.stop_at > config.steps:
        raise CLIError(f"--stop-at {args.stop_at} is beyond --steps {config.steps}")
    seed_everything(args.seed)
    model = CPM.from_preset(args.preset, **dict(args.model))
    rank, world, device = setup_distributed(args.device)
    config.device = str(device)
    try:
        changes = _check_resume(args, previous, model, config, augment_settings(augment)) if previous else {}
        size = model.config.input_size
        train_set = make_dataset(args.data, size, split="train", seed=args.seed, cache=cache, skip_bad=args.skip_bad)
        eval_set = make_dataset(args.data, size, split="test", seed=args.seed, length=args.eval_size,
                                cache=cache and args.eval_every > 0, skip_bad=args.skip_bad)
        _check_parts(model, train_set, args.data)
        settings = {"preset": args.preset, "data": args.data, "model": model.config.to_dict(),
                    "train": config.to_dict(), "world_size": world, "per_rank_batch_size": config.batch_size // world,
                    "train_items": len(train_set), "eval_items": len(eval_set), "augment": augment_settings(augment),
                    "cache": cache, "skip_bad": args.skip_bad}
        return _train_and_report(args, out, model, train_set, eval_set, config, augment, settings,
                                 previous, changes, rank, device)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _train_and_report(args, out, model, train_set, eval_set, config, augment, settings, previous, changes,
                      rank, device) -> int:
    """Build the trainer, write config.json, train, write history.csv and eval.csv, print the table."""
    from ..data.specs import is_real
    from ..files import write_csv, write_json
    from ..inference import protocol_title
    from ..train import Trainer

    trainer = Trainer(model, train_set, config, eval_set=eval_set, augment=augment)
    ckpt_path = config.checkpoint
    if rank == 0:
        write_json(os.path.join(out, "config.json"), _with_history(args, settings, previous, changes))
        world = settings["world_size"]
        print(f"training {args.preset} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
              f"{args.data}, {config.steps} steps x batch {config.batch_size}, strategy {config.strategy}, "
              f"augment {'on' if augment else 'off'}, crop cache {'on' if settings['cache'] else 'off'}, "
              f"device {device}" + (f", {world} processes" if world > 1 else ""), flush=True)
        if "steps" in changes:
            _print_extension(previous[0], trainer, changes["steps"])
    t0 = time.perf_counter()
    history = _fit(args, trainer, out, rank)
    elapsed = time.perf_counter() - t0
    if rank != 0:
        return 0
    write_csv(os.path.join(out, "history.csv"), history, float_format=None)
    if trainer.step < config.steps:
        print(f"stopped at step {trainer.step} of {config.steps} after {elapsed:.1f} s; checkpoint: {ckpt_path}; "
              f"continue with: {resume_command(args)}")
        return 0
    evals = trainer.evals
    final = (evals[evals["step"] == config.steps].drop(columns="step") if len(evals)
             and (evals["step"] == config.steps).any() else trainer.evaluate(eval_set))
    write_csv(os.path.join(out, "eval.csv"), final, float_format=None)
    where = (f"protocol: {protocol_title('gt-crop')}; run `cpm-lab eval --protocol lsp` for the official test"
             if is_real(args.data) else "the generator's own frames")
    print(format_pck_table(final, title=f"held-out {eval_set.split_description}, {len(eval_set)} images, after "
                                        f"{config.steps} steps, {elapsed:.1f} s of training ({where})"))
    print(f"wrote {out}/config.json, history.csv, checkpoint.pt, eval.csv")
    return 0


def _fit(args, trainer, out: str, rank: int):
    """``trainer.fit``; when it stops early with progress on disk, history.csv is written and the
    error gets a note with the command that continues the run."""
    from ..files import write_csv
    from ..train import TrainingDiverged
    from ..utils import add_note

    try:
        return trainer.fit(resume=trainer.config.checkpoint if args.resume else None, until=args.stop_at)
    except BaseException as exc:
        if rank == 0 and trainer.resumable_step is not None and not isinstance(exc, TrainingDiverged):
            with contextlib.suppress(Exception):
                write_csv(os.path.join(out, "history.csv"), trainer.history, float_format=None)
            add_note(exc, f"continue with: {resume_command(args)}")
        raise


command("train", "train a CPM and evaluate it on a held-out split", _train_arguments)(_train)


# ------------------------------------------------------------------------------------------------
# --resume: what the run was, what may change, and the record of it
# ------------------------------------------------------------------------------------------------
def _previous_run(args: argparse.Namespace, out: str, ckpt_path: str) -> tuple[dict, dict | None] | None:
    """With ``--resume``: (the checkpoint, read and checked; config.json or None). Without: None,
    after warning that an earlier run's checkpoint in ``out`` will be replaced."""
    from ..train import check_resumable, read_checkpoint

    if not args.resume:
        if os.path.isfile(ckpt_path):
            warnings.warn(f"{ckpt_path} (an earlier run) will be replaced by this new run; --resume continues it "
                          f"instead", stacklevel=2)
        return None
    if not os.path.exists(ckpt_path):
        raise CLIError(f"--resume: no checkpoint at {ckpt_path!r}")
    ckpt = read_checkpoint(ckpt_path)
    check_resumable(ckpt, ckpt_path)
    config_path = os.path.join(out, "config.json")
    try:
        with open(config_path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        warnings.warn(f"--resume: {config_path} is missing or unreadable, so --data and augmentation cannot be "
                      f"compared with the run's", stacklevel=2)
        saved = None
    return ckpt, saved if isinstance(saved, dict) else None


def _check_resume(args, previous, model, config, augment: dict) -> dict:
    """The settings this resume changes, ``{name: (old, new)}``; CLIError naming every setting that
    would change what the run computes (before anything is written)."""
    from ..train import resume_diff

    ckpt, saved = previous
    changes, refused = resume_diff(ckpt["model_config"], ckpt["train_config"], model.config, config)
    if saved is not None:
        if "data" in saved and saved["data"] != args.data:
            refused.append(f"data={saved['data']!r} (now {args.data!r})")
        before = saved.get("augment")
        if isinstance(before, dict) and before != augment:
            was, now = ("on" if d.get("enabled") else "off" for d in (before, augment))
            flag = "--augment" if before.get("enabled") else "--no-augment"
            refused.append(f"augmentation {was} (now {now}): resume with {flag}" if was != now
                           else f"augment={before} (now {augment})")
    if refused:
        raise CLIError(f"--resume: {config.checkpoint} comes from a run with other settings: {'; '.join(refused)}. "
                       f"Resume with the run's own settings (see config.json beside it), or train into another --out")
    return changes


#: config.json entries outside the train config that a resume may change (recorded in the history).
_RECORDED = ("cache", "skip_bad", "world_size", "per_rank_batch_size", "train_items", "eval_items")


def _with_history(args, settings: dict, previous, changes: dict) -> dict:
    """config.json's content: the run's settings and the settings history, one entry per start
    or resume (``{time, argv, event, from_step, changes}``)."""
    saved = previous[1] if previous else None
    history = list(saved.get("history", [])) if saved else []
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": ["cpm-lab", *args._argv]}
    if previous:
        changes = {**changes, **{key: (saved[key], settings[key]) for key in _RECORDED
                                 if saved and key in saved and saved[key] != settings[key]}}
        entry.update(event="resume", from_step=int(previous[0]["step"]),
                     changes={k: list(v) for k, v in changes.items()})
    else:
        entry["event"] = "start"
    return {**settings, "history": history + [entry]}


def _print_extension(ckpt: dict, trainer, steps: tuple[int, int]) -> None:
    """Say what extending a run does to its learning rate."""
    done, (old, new) = int(ckpt["step"]), steps
    last = (ckpt.get("history") or [{}])[-1].get("lr")
    was = f"{last:.3g} at step {done}" if isinstance(last, float) else f"step {done}"
    print(f"extending the run from {old} to {new} steps: the learning-rate schedule is planned again for {new} "
          f"steps ({was} -> {trainer.lr_at(done + 1):.3g} at step {done + 1})", flush=True)


def _check_parts(model, dataset, spec: str) -> None:
    """CLIError when the model predicts another number of body parts than the data has."""
    from ..data.specs import dataset_parts

    have = dataset_parts(dataset)
    if model.config.num_parts != have:
        raise CLIError(f"the model predicts {model.config.num_parts} parts, the data ({spec}) has {have}")
