"""``cpm-lab validate --data SPEC``: list every unreadable image and invalid annotation of a dataset.

Every file the spec names is checked whole (``cpm_lab.data.specs.validation_sets``): each
annotation record is parsed and sanity-checked (``cpm_lab.data.annotations``: non-finite
coordinates, joints far outside the image, degenerate or absurd person boxes) and each image is
opened and decoded. One line per problem on stdout, naming the file, the sample and, for an
annotation, the joint; then a summary line. Exit status 0 when everything is usable, 2 when
problems were found (so ``cpm-lab validate --data lspet && cpm-lab train --data lspet ...`` trains
on clean data only); ``train --skip-bad`` and ``eval --skip-bad`` leave the listed samples out.
"""
from __future__ import annotations

import argparse

from . import PROG, command


def _validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset spec, e.g. lspet, lsp:DIR, mpii:FILE.json, lspet+lsp")


def _validate(args: argparse.Namespace) -> int:
    from ..data.specs import validation_sets

    datasets = validation_sets(args.data)
    problems, samples = 0, 0
    for ds in datasets:
        reasons = getattr(ds, "reasons", None) or getattr(ds, "skipped_reasons", [])
        samples += len(reasons) if hasattr(ds, "reasons") else len(ds) + len(reasons)
        for reason in reasons:
            print(" ".join(reason.split()), flush=True)
        problems += len(reasons)
    if not datasets:
        print(f"{args.data}: synthetic data is generated on the fly; there are no files to check")
        return 0
    verdict = f"{problems} problem(s)" if problems else "no problems"
    print(f"{PROG} validate: {verdict} in {samples} samples of {args.data}")
    return 2 if problems else 0


command("validate", "list every unreadable image and invalid annotation of a dataset; exit 2 if any",
        _validate_arguments)(_validate)
