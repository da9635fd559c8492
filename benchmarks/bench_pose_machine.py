"""Classical Pose Machine on synthetic data: fit time and per-stage PCK on a held-out split.

    python benchmarks/bench_pose_machine.py                              # the default measurement
    python benchmarks/bench_pose_machine.py --n-train 300 --n-test 100   # a quick look
    python benchmarks/bench_pose_machine.py --figure /tmp/pm_beliefs.png # + stage 1 vs last beliefs

Trains a ``PoseMachine`` on ``SyntheticPoses(n_train, 128, "standard", seed=train_seed)`` and
evaluates every stage on ``SyntheticPoses(n_test, 128, "standard", seed=test_seed)`` (a different
seed, so different people, poses and backgrounds) with ``cpm_lab.inference.evaluate``: PCK with
torso normalisation (right shoulder to left hip), visible joints only.

Reported times: wall-clock seconds of the whole ``fit`` (loading/rendering the images, features,
every fold model and refit), and the process CPU seconds over the same span (all threads), which
is less sensitive to other processes sharing the machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cpm_lab import inference, metrics  # noqa: E402
from cpm_lab.data import SyntheticPoses  # noqa: E402
from cpm_lab.models.pose_machine import PoseMachine  # noqa: E402


def belief_figure(pm: PoseMachine, item: dict, parts=("right_wrist", "left_wrist"), path: str = "/tmp/pm_beliefs.png"):
    """Save ``cpm_lab.viz.pose_machine.plot_stage_comparison`` (stage 1 vs the last stage) for one item."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cpm_lab.viz.pose_machine import plot_stage_comparison

    fig = plot_stage_comparison(pm, item["image"], item["keypoints"], parts=parts)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=800)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--difficulty", default="standard")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--test-seed", type=int, default=1)
    ap.add_argument("--fit-seed", type=int, default=0)
    ap.add_argument("--estimator", default="extra_trees")
    ap.add_argument("--n-estimators", type=int, default=None)
    ap.add_argument("--figure", default=None, help="PNG path for stage-1 vs last-stage wrist beliefs")
    ap.add_argument("--figure-index", type=int, default=None, help="held-out item to plot (default: first "
                    "one where stage 1 and the last stage differ most on the wrists)")
    ap.add_argument("--save", default=None, help="also save the fitted model here (joblib)")
    ap.add_argument("--load", default=None, help="skip fitting: load a model saved with --save (trusted files only)")
    args = ap.parse_args(argv)

    overrides = {"num_stages": args.stages, "image_size": args.image_size, "estimator": args.estimator}
    if args.n_estimators:
        overrides["n_estimators"] = args.n_estimators
    pm = PoseMachine(**overrides)
    train = SyntheticPoses(args.n_train, args.image_size, args.difficulty, seed=args.train_seed)
    test = SyntheticPoses(args.n_test, args.image_size, args.difficulty, seed=args.test_seed)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(pm.config)
    if args.load:
        pm = PoseMachine.load(args.load)
        print("loaded", args.load, "(fit figures below are from when it was trained)")
    else:
        pm.fit(train, seed=args.fit_seed, progress=False)
    info = pm.fit_info_
    print(f"fit: {info['n_images']} images, {info['n_samples']} sampled cells, "
          f"{info['fit_seconds']:.1f} s wall, {info['cpu_seconds']:.1f} s CPU; per stage (s): "
          + ", ".join(f"{s:.1f}" for s in info["stage_seconds"])
          + "; held-out training-image error passed on per stage (px): "
          + ", ".join(f"{e:.1f}" for e in info["heldout_epe_px"]))
    t0 = time.perf_counter()
    table = inference.evaluate(pm, test, batch_size=64, device="cpu", thresholds=(0.1, 0.2, 0.5))
    print(f"evaluate: {args.n_test} held-out images in {time.perf_counter() - t0:.1f} s")
    print("\nPCK (torso), all visible joints:")
    print(metrics.pck_table(table).round(3).to_string())
    for part in ("r_wrist", "l_wrist"):
        print(f"\nPCK (torso), {part}:")
        print(metrics.pck_table(table, part=part).round(3).to_string())
    if args.save:
        print("saved", pm.save(args.save))
    if args.figure:
        idx, why = args.figure_index, "chosen with --figure-index"
        if idx is None:  # a sample where the wrists changed between stage 1 and the last stage
            from cpm_lab.analysis import most_improved

            n = min(64, len(test))
            imgs = torch.stack([test[i]["image"] for i in range(n)])
            kps = torch.stack([test[i]["keypoints"] for i in range(n)])
            preds = inference.predict(pm, imgs, keep_beliefs=False).keypoints
            idx = most_improved(preds, kps, parts=("right_wrist", "left_wrist"))
            why = f"largest wrist-error drop from stage 1 to stage {pm.num_stages} among the first {n}"
        print(f"figure: held-out item {idx} ({why}) ->", belief_figure(pm, test[idx], path=args.figure))


if __name__ == "__main__":
    main()
