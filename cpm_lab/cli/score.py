"""``cpm-lab score``: score predictions made elsewhere (the official CPM ``.mat``, ``.npy`` or
CSV; ``cpm_lab.scoring``) against a dataset's ground truth in original-image pixels, with the
same PCK as every other table of the package, and write the tidy CSV."""
from __future__ import annotations

import argparse
import os

from . import command, ensure_writable_dir


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predictions", required=True,
                   help="predictions file: .mat (official prediction_all, 14x2xN, 1-based), .npy (N,14,2) or .csv")
    p.add_argument("--data", default="lsp", help="dataset spec whose ground truth to score against (default: lsp)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--joints", default="labelled", choices=("labelled", "visible"),
                   help="score every labelled joint (default; the LSP benchmark counts all 14) or visible ones only")
    p.add_argument("--one-based", action=argparse.BooleanOptionalAction, default=None,
                   help="coordinates are 1-based (MATLAB); default: yes for .mat, no for .npy and .csv")
    p.add_argument("--conventions", action="store_true",
                   help="also print the same predictions under every common PCK convention (torso diagonals, "
                        "visible joints, bbox, neck-head, crop/10, observer-centric labels)")
    p.add_argument("--out", help="write the tidy metrics table to this CSV file")


def _score(args: argparse.Namespace) -> int:
    from ..data.specs import make_dataset
    from ..metrics import part_table
    from ..scoring import read_predictions, score_conventions, score_predictions

    if args.out:
        ensure_writable_dir(os.path.dirname(os.path.abspath(args.out)))
    predictions = read_predictions(args.predictions, one_based=args.one_based)
    dataset = make_dataset(args.data, 64, split=args.split)  # crops are never decoded: any size will do
    table = score_predictions(predictions, dataset, thresholds=(0.1, 0.2), joints=args.joints)
    wide = part_table(table, thresholds=(0.1, 0.2))
    print(f"{args.predictions} on {dataset.split_description} ({len(dataset)} images), "
          f"PCK (torso |left shoulder - right hip|, {args.joints} joints) in %:")
    print(f"{'joint':<10}{'PCK@0.1':>9}{'PCK@0.2':>9}{'n':>7}")
    for part, row in wide.iterrows():
        print(f"{part:<10}{100 * row['PCK@0.1']:>9.2f}{100 * row['PCK@0.2']:>9.2f}{int(row['n']):>7}")
    if args.conventions:
        conv = score_conventions(predictions, dataset, thresholds=(0.1, 0.2, 0.5))
        wide = conv.pivot_table(index="convention", columns="threshold", values="value", sort=False)
        print("\nthe same predictions under other conventions (crop/10: the LSP protocol's person box), in %:")
        print((100 * wide).round(2).to_string())
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


command("score", "score predictions made elsewhere (.mat/.npy/.csv) against a dataset's ground truth",
        _arguments)(_score)
