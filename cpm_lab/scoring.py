"""Scoring predictions made elsewhere (``cpm-lab score``): read a predictions file and score it
against a dataset's ground truth in original-image pixels, with the same metrics as a model.

Accepted files, one prediction per image of the split, in LSP-14 joint order:

* ``.mat``: the official CPM release's ``prediction_all`` (14 x 2 x N), in MATLAB's 1-based
  pixel coordinates, as ``testing/predicts/LSP_prediction_model_*.mat`` store them;
* ``.npy``: an array (N, 14, 2) or (N, 14, 3) of x, y (a third column is ignored);
* ``.csv``: one row per image with columns ``<joint>_x, <joint>_y`` for the 14 short joint
  names of ``cpm_lab.skeleton.SHORT_NAMES`` (``r_ankle_x, r_ankle_y, ...``; other columns, such
  as an ``image`` name, are ignored), the layout ``write_predictions_csv`` writes.

``.npy`` and ``.csv`` are 0-based (pixel centres at integer coordinates, cpm_lab's convention)
and ``.mat`` 1-based, unless ``one_based`` says otherwise. Scoring converts everything to
0-based, so a distance is the same as in the file's own convention.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from . import skeleton
from .metrics import convention_table, keypoint_metrics

PREDICTION_FORMATS = (".mat", ".npy", ".csv")


def csv_columns() -> list[str]:
    """The x, y columns of a predictions CSV, in joint order."""
    return [f"{name}_{axis}" for name in skeleton.SHORT_NAMES for axis in ("x", "y")]


def read_predictions(path: str | os.PathLike, one_based: bool | None = None) -> np.ndarray:
    """Predictions (N, 14, 2) float64 in 0-based pixel coordinates from ``path`` (see the
    module docstring for the formats); ``one_based`` overrides the format's convention.
    ValueError names the file and what was expected."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PREDICTION_FORMATS:
        raise ValueError(f"{path}: unknown predictions format {suffix!r}; expected one of {PREDICTION_FORMATS}")
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    if suffix == ".mat":
        xy = _read_mat(path)
    elif suffix == ".npy":
        xy = _read_npy(path)
    else:
        xy = _read_csv(path)
    if not np.isfinite(xy).all():
        n, j = np.argwhere(~np.isfinite(xy).all(-1))[0]
        raise ValueError(f"{path}: prediction {n} ({skeleton.JOINT_NAMES[j]}) is not a finite number")
    return xy - 1.0 if (suffix == ".mat" if one_based is None else one_based) else xy


def _read_mat(path: Path) -> np.ndarray:
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for bad files
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from exc
    if "prediction_all" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: expected an array named 'prediction_all' (14 x 2 x N), found {found}")
    arr = np.asarray(mat["prediction_all"], dtype=np.float64)
    if arr.ndim != 3 or arr.shape[:2] != (skeleton.NUM_JOINTS, 2):
        raise ValueError(f"{path}: 'prediction_all' must be 14 x 2 x N; got {arr.shape}")
    return arr.transpose(2, 0, 1)


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - name the file whatever numpy raised
        raise ValueError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc})") from exc
    if arr.ndim != 3 or arr.shape[1] != skeleton.NUM_JOINTS or arr.shape[2] not in (2, 3):
        raise ValueError(f"{path}: expected an array (N, 14, 2) or (N, 14, 3) of x, y; got {arr.shape}")
    return np.asarray(arr[..., :2], dtype=np.float64)


def _read_csv(path: Path) -> np.ndarray:
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - name the file whatever pandas raised
        raise ValueError(f"{path}: not a readable CSV file ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in csv_columns() if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing[:4]}{' ...' if len(missing) > 4 else ''}; "
                         f"expected {', '.join(csv_columns()[:4])}, ... (one row per image)")
    values = frame[csv_columns()].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    return values.reshape(len(frame), skeleton.NUM_JOINTS, 2)


def write_predictions_csv(path: str | os.PathLike, keypoints, images=None) -> str:
    """Write predictions (N, 14, 2 or 3) in 0-based pixels as the CSV ``read_predictions``
    reads, with an optional ``image`` column of names; atomic. Returns ``path``."""
    from .files import write_csv

    xy = np.asarray(keypoints, dtype=np.float64)[..., :2].reshape(-1, skeleton.NUM_JOINTS * 2)
    frame = pd.DataFrame(xy, columns=csv_columns())
    if images is not None:
        frame.insert(0, "image", list(images))
    return write_csv(path, frame, float_format="%.3f")


def score_predictions(predictions, dataset, thresholds=(0.1, 0.2), normalize: str = "torso",
                      joints: str = "labelled") -> pd.DataFrame:
    """Score predictions (N, 14, 2) in 0-based original-image pixels against ``dataset``'s
    ground truth (``dataset.keypoints_orig``, one row per image, same order) with
    ``metrics.keypoint_metrics`` (one stage, numbered 1; no AUC or EPE thresholds beyond PCK's).
    """
    pred, truth = _paired(predictions, dataset)
    return keypoint_metrics([pred], truth, thresholds, normalize, stages=[1], joints=joints)


def _paired(predictions, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (N, 14, 2) as (N, 14, 3) keypoints (flag 1) beside the dataset's ground truth
    ``keypoints_orig``; one clear error when the counts differ."""
    truth = np.asarray(dataset.keypoints_orig, dtype=np.float64)
    pred = np.asarray(predictions, dtype=np.float64)
    if pred.shape[0] != truth.shape[0]:
        raise ValueError(f"{pred.shape[0]} predictions for the {truth.shape[0]} images of "
                         f"{getattr(dataset, 'split_description', 'the dataset')}")
    return np.concatenate([pred[..., :2], np.ones(pred.shape[:2] + (1,))], axis=-1), truth


def protocol_crop_sides(dataset) -> np.ndarray:
    """(N,) side in original pixels of the person box the official LSP protocol scales each test
    image to: the image height / ``inference.LSP_TARGET`` (the person is brought to 0.8 of the
    368 px box, so the box is 1.25 image heights). Read from the image headers (``dataset.paths``)."""
    from PIL import Image

    from .inference import LSP_TARGET

    sides = []
    for path in dataset.paths:
        with Image.open(path) as im:
            sides.append(im.height / LSP_TARGET)
    return np.asarray(sides, dtype=np.float64)


def score_conventions(predictions, dataset, thresholds=(0.2,)) -> pd.DataFrame:
    """``metrics.convention_table`` of predictions (N, 14, 2) in 0-based original-image pixels
    against ``dataset.keypoints_orig``: the same predictions under every common PCK convention,
    with the official LSP protocol's person box (``protocol_crop_sides``) as the crop of "crop/10"."""
    pred, truth = _paired(predictions, dataset)
    return convention_table(pred, truth, thresholds=thresholds, crop_sizes=protocol_crop_sides(dataset))
