"""Classical Pose Machine on synthetic data: fit time and per-stage PCK on a held-out split.

    python benchmarks/bench_pose_machine.py                              # the default measurement
    python benchmarks/bench_pose_machine.py --n-train 300 --n-test 100   # a quick look
    python benchmarks/bench_pose_machine.py --figure /tmp/pm_beliefs.png # + stage 1 vs last beliefs

Trains a ``PoseMachine`` on ``SyntheticPoses(n_train, 128, "standard", seed=train_seed)`` and
evaluates every stage on ``SyntheticPoses(n_test, 128, "standard", seed=test_seed)`` (a different
seed, so different people, poses and backgrounds) with ``cpm_lab.metrics.evaluate``: PCK with
torso normalisation (right shoulder to left hip), visible joints only.

Reported times: wall-clock seconds of the whole ``fit`` (loading/rendering the images, features,
every fold model and refit), and the process CPU seconds over the same span (all threads), which
is less sensitive to other processes sharing the machine.
"""
from __future__ import annotations

import argparse
import time
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cpm_lab import metrics, skeleton  # noqa: E402
from cpm_lab.data import SyntheticPoses  # noqa: E402
from cpm_lab.models.pose_machine import PoseMachine  # noqa: E402
from cpm_lab.targets import decode  # noqa: E402


def belief_figure(pm: PoseMachine, item: dict, parts=("right_wrist", "left_wrist"), path: str = "/tmp/pm_beliefs.png"):
    """One held-out sample: stage-1 and last-stage belief maps of ``parts`` over the image.

    One row per part, sharing a colour scale so confidence can be compared across stages; the
    true joints of all ``parts`` are marked in every panel (red = person's right, cyan = left).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = item["image"]
    kp = item["keypoints"]
    beliefs = pm(img[None])
    stages = [0, len(beliefs) - 1]
    size = pm.config.image_size
    extent = (-0.5, size - 0.5, size - 0.5, -0.5)  # belief cells stretched over the image pixels
    markers = dict(zip(parts, ("o", "s", "^", "D")))
    fig, axes = plt.subplots(len(parts), 1 + len(stages), figsize=(3.3 * (1 + len(stages)) + 0.6, 3.3 * len(parts)),
                             squeeze=False)

    def mark(ax, legend=False):
        for nm in parts:
            j = skeleton.JOINT_INDEX[nm]
            ax.scatter(kp[j, 0], kp[j, 1], s=80, marker=markers[nm], facecolors="none", linewidths=2,
                       edgecolors="red" if nm.startswith("right") else "cyan", label=f"true {skeleton.SHORT_NAMES[j]}")
        if legend:
            ax.legend(loc="lower left", fontsize=7, framealpha=0.8)

    for r, name in enumerate(parts):
        j = skeleton.JOINT_INDEX[name]
        axes[r, 0].imshow(img.permute(1, 2, 0).numpy())
        mark(axes[r, 0], legend=True)
        axes[r, 0].set_title("held-out image")
        axes[r, 0].set_ylabel(f"belief for {name.replace('_', ' ')}", fontsize=11)
        vmax = max(float(beliefs[s][0, j].max()) for s in stages)
        for c, s in enumerate(stages, start=1):
            ax = axes[r, c]
            ax.imshow(img.permute(1, 2, 0).numpy().mean(-1), cmap="gray")
            im = ax.imshow(beliefs[s][0, j].numpy(), cmap="magma", alpha=0.7, extent=extent, vmin=0, vmax=vmax,
                           interpolation="nearest")
            mark(ax)
            px, py, conf = decode(beliefs[s], pm.codec)[0, j].tolist()
            ax.scatter([px], [py], marker="x", s=90, c="white", linewidths=2.5)
            ax.set_title(f"stage {s + 1}: P({skeleton.SHORT_NAMES[j]}) per cell\n"
                         f"x = decoded peak ({conf:.2f})", fontsize=10)
        fig.colorbar(im, ax=list(axes[r, 1:]), fraction=0.03, pad=0.02, label="class probability")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    g = pm.codec.output_size
    fig.suptitle(f"Classical pose machine, {g}x{g} belief cells (stride {pm.codec.stride}): "
                 f"stage 1 vs stage {stages[-1] + 1}", fontsize=11)
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
    table = metrics.evaluate(pm, test, batch_size=64, device="cpu", thresholds=(0.1, 0.2, 0.5))
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
            imgs = torch.stack([test[i]["image"] for i in range(min(64, len(test)))])
            kps = torch.stack([test[i]["keypoints"] for i in range(len(imgs))])
            bs = pm(imgs)
            wrists = [6, 11]
            err = [(decode(b, pm.codec)[:, wrists, :2] - kps[:, wrists, :2]).norm(dim=-1).sum(-1)
                   for b in (bs[0], bs[-1])]
            ok = (kps[:, wrists, 2] > 0).all(-1)
            idx = int(torch.where(ok, err[0] - err[1], torch.full_like(err[0], -1e9)).argmax())
            why = f"largest wrist-error drop from stage 1 to stage {pm.num_stages} among the first {len(imgs)}"
        print(f"figure: held-out item {idx} ({why}) ->", belief_figure(pm, test[idx], path=args.figure))


if __name__ == "__main__":
    main()
