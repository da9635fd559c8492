"""Classical Pose Machines (Ramakrishna, Munoz, Hebert, Bagnell, Sheikh; ECCV 2014).

"Pose Machines: Articulated Pose Estimation via Inference Machines" predicts a belief map per
part with a SEQUENCE of multi-class classifiers over image locations. Stage 1 sees hand-made
image features only; every later stage sees the same image features plus *context features*
computed from ALL parts' beliefs of the stage before, so it can learn an implicit spatial
model ("a right wrist lies at the end of a right forearm, not near the left shoulder") without
graphical-model inference. Stages are trained one after another, and the beliefs handed to the
next stage for TRAINING images come from models that never saw those images (stacking with
held-out folds), so stage t+1 does not learn to trust over-confident training-set beliefs.

This module is the baseline the Convolutional Pose Machine replaces, built from the same
ingredients a 2014 system had: HOG, colour, and a tree ensemble from scikit-learn. It speaks the
CPM's conventions so the rest of ``cpm_lab`` (``targets.decode``, metrics, widgets) treats both
alike: beliefs are a list (one per stage) of ``N x (P+1) x H/8 x W/8`` tensors, parts first,
background last, here the classifier's class probabilities per grid cell.

The per-cell features, labels and training-cell sampling live in
:mod:`cpm_lab.models.pose_machine_features` (``image_feature_names()``,
``context_feature_names()``, ``location_labels``: what each stage's classifier sees and is
trained on, and the cell geometry they share with the CPM's codec); this module holds the
configuration and the stage-wise stacked training.

Saved models are joblib pickles of scikit-learn estimators: :meth:`PoseMachine.load` can run
arbitrary code from a malicious file, so load only files you trust.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import skeleton
from ..targets import CodecConfig, decode, labelled_mask
from ..utils import check_fields
from .pose_machine_features import (
    _as_numpy_images,
    _image_features_one,
    _sample_locations,
    context_feature_names,
    context_features,
    image_feature_names,
    location_labels,
)

FORMAT_NAME = "cpm_lab.pose_machine"
FORMAT_VERSION = 1

ESTIMATORS = ("extra_trees", "random_forest", "hist_gradient_boosting")


@dataclass(frozen=True)
class PoseMachineConfig:
    """Everything that defines a pose machine; the stride is the CPM's 8.

    Attributes:
        num_stages: number of classifier stages T (paper: 2-3 on LSP).
        image_size: side of the square input in pixels; a multiple of 8.
        num_parts: P; beliefs have P + 1 channels (background last).
        orientations: HOG orientation bins.
        label_radius: besides the cell containing a visible joint, cells whose centre is within
            this many cells of the joint are labelled with that part (0 = that cell only).
        background_ratio: background samples per part sample, per image.
        n_folds: K for the held-out (stacking) beliefs passed between stages during training.
        estimator: "extra_trees" (default: fastest here), "random_forest" or
            "hist_gradient_boosting" (boosting, closest to the paper's boosted forests, but with
            ~750 features x 15 classes it is many times slower on 2 cores).
        n_estimators: trees (forests) or boosting iterations.
        max_depth: tree depth limit (None = unlimited for forests).
        min_samples_leaf: minimum samples per leaf.
        max_features: features tried per split for forests ("sqrt", float fraction, int).
        learning_rate: boosting only.
        n_jobs: parallel jobs for forests (boosting uses OpenMP threads).
        context_radii: ring radii in cells for the context features.
        n_peaks: belief peaks per part whose offsets enter the context features.
        peak_suppression: half-width in cells of the square zeroed around a found peak.
    """

    num_stages: int = 3
    image_size: int = 128
    num_parts: int = skeleton.NUM_JOINTS
    orientations: int = 9
    label_radius: float = 0.0
    background_ratio: float = 1.5
    n_folds: int = 3
    estimator: str = "extra_trees"
    n_estimators: int = 60
    max_depth: int | None = None
    min_samples_leaf: int = 2
    max_features: Any = "sqrt"
    learning_rate: float = 0.15
    n_jobs: int = 2
    context_radii: tuple[int, ...] = (1, 2, 4)
    n_peaks: int = 2
    peak_suppression: int = 2

    stride = 8

    def __post_init__(self):
        if self.num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {self.num_stages}")
        if self.image_size <= 0 or self.image_size % self.stride:
            raise ValueError(f"image_size must be a positive multiple of {self.stride}, got {self.image_size}")
        if self.image_size < 3 * self.stride:
            raise ValueError(f"image_size must be at least {3 * self.stride} px for HOG blocks, got {self.image_size}")
        if self.num_parts < 1:
            raise ValueError(f"num_parts must be >= 1, got {self.num_parts}")
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2 (held-out beliefs need another fold), got {self.n_folds}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.label_radius < 0 or self.background_ratio <= 0:
            raise ValueError("label_radius must be >= 0 and background_ratio > 0, got "
                             f"{self.label_radius}, {self.background_ratio}")
        if not self.context_radii or any(int(r) < 1 for r in self.context_radii):
            raise ValueError(f"context_radii must be positive cell counts, got {self.context_radii}")
        object.__setattr__(self, "context_radii", tuple(int(r) for r in self.context_radii))
        if self.n_peaks < 1:
            raise ValueError(f"n_peaks must be >= 1, got {self.n_peaks}")

    @property
    def codec(self) -> CodecConfig:
        """Belief geometry shared with the CPM (stride 8, ``output_size = image_size // 8``)."""
        return CodecConfig(input_size=self.image_size, stride=self.stride, num_parts=self.num_parts)

    @property
    def grid_size(self) -> int:
        """Belief-map side in cells."""
        return self.image_size // self.stride

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PoseMachineConfig":
        return cls(**check_fields(cls, d))


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class PoseMachine:
    """A classical Pose Machine: ``num_stages`` multi-class tree ensembles over grid cells.

    Use like a CPM at inference: ``pm(images)`` returns a list of per-stage belief tensors
    ``N x (P+1) x G x G`` (class probabilities; background last) on the images' device, and
    ``pm.codec`` is the :class:`CodecConfig` for ``cpm_lab.targets.decode``. The classifiers run
    on the CPU (scikit-learn); inputs on any device are copied over and results copied back.

    Example:
        >>> pm = PoseMachine(num_stages=3, image_size=128)
        >>> pm.fit(dataset, n_images=300, seed=0)          # doctest: +SKIP
        >>> beliefs = pm(images)                            # doctest: +SKIP
        >>> keypoints = decode(beliefs[-1], pm.codec)       # doctest: +SKIP
    """

    def __init__(self, config: PoseMachineConfig | None = None, **overrides):
        config = config or PoseMachineConfig()
        self.config = replace(config, **overrides) if overrides else config
        self.models_: list = []          # one fitted classifier per stage
        self.fit_info_: dict = {}
        self.training = False

    # -- CPM duck typing ----------------------------------------------------------------------
    @property
    def codec(self) -> CodecConfig:
        return self.config.codec

    @property
    def num_stages(self) -> int:
        return self.config.num_stages

    @property
    def is_fitted(self) -> bool:
        return len(self.models_) == self.config.num_stages

    def eval(self) -> "PoseMachine":
        """No-op (there is no train/eval mode); returns self so ``model.eval()`` chains."""
        return self

    def train(self, mode: bool = True) -> "PoseMachine":
        """Only records ``mode`` in ``training`` (duck typing with ``nn.Module``); use :meth:`fit` to train."""
        self.training = bool(mode)
        return self

    def to(self, *args, **kwargs) -> "PoseMachine":
        """No-op: the classifiers live on the CPU; outputs follow the input images' device."""
        return self

    def parameters(self):
        """No trainable tensors: yields one empty CPU tensor, so code that reads the model's device
        with ``next(model.parameters()).device`` works and parameter counts are 0."""
        return iter((torch.empty(0),))

    def __call__(self, images: torch.Tensor, center_maps: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Same as :meth:`predict_beliefs`; ``center_maps`` is accepted for CPM compatibility and ignored."""
        return self.predict_beliefs(images)

    forward = __call__

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "not fitted"
        return f"PoseMachine({state}, {self.config})"

    # -- features -----------------------------------------------------------------------------
    def image_feature_names(self) -> list[str]:
        return image_feature_names(self.config.orientations)

    def context_feature_names(self) -> list[str]:
        c = self.config
        return context_feature_names(c.num_parts, c.context_radii, c.n_peaks)

    def feature_names(self, stage: int) -> list[str]:
        """Column names of the classifier of ``stage`` (1-based): image features, then context (stage >= 2)."""
        self._check_stage(stage)
        return self.image_feature_names() + (self.context_feature_names() if stage >= 2 else [])

    def context(self, beliefs: np.ndarray) -> np.ndarray:
        """The context features a later stage reads from beliefs (N, P(+1), G, G):
        (N, G, G, F) with columns ``context_feature_names()``."""
        c = self.config
        return context_features(beliefs[:, : c.num_parts], c.context_radii, c.n_peaks, c.peak_suppression)

    def _check_stage(self, stage: int):
        if not 1 <= stage <= self.config.num_stages:
            raise ValueError(f"stage must be in 1..{self.config.num_stages}, got {stage}")

    # -- classifiers --------------------------------------------------------------------------
    def _new_estimator(self, seed: int):
        c = self.config
        if c.estimator == "hist_gradient_boosting":
            from sklearn.ensemble import HistGradientBoostingClassifier
            return HistGradientBoostingClassifier(
                max_iter=c.n_estimators, learning_rate=c.learning_rate, max_depth=c.max_depth,
                min_samples_leaf=max(c.min_samples_leaf, 1), early_stopping=False, random_state=seed,
                max_features=c.max_features if isinstance(c.max_features, float) else 1.0)
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
        cls = ExtraTreesClassifier if c.estimator == "extra_trees" else RandomForestClassifier
        return cls(n_estimators=c.n_estimators, max_depth=c.max_depth, min_samples_leaf=c.min_samples_leaf,
                   max_features=c.max_features, n_jobs=c.n_jobs, random_state=seed)

    def _proba_maps(self, model, x: np.ndarray, n: int) -> np.ndarray:
        """Classifier probabilities for all cells: x (n*G*G, F) -> (n, P+1, G, G) float32."""
        c = self.config
        g = c.grid_size
        proba = model.predict_proba(x).astype(np.float32)
        full = np.zeros((x.shape[0], c.num_parts + 1), np.float32)
        full[:, np.asarray(model.classes_, dtype=np.int64)] = proba  # classes never seen stay 0
        return full.reshape(n, g, g, c.num_parts + 1).transpose(0, 3, 1, 2)

    # -- training -----------------------------------------------------------------------------
    def fit(self, dataset, n_images: int | None = None, seed: int = 0, indices: Sequence[int] | None = None,
            progress: bool = True) -> "PoseMachine":
        """Train every stage on ``dataset`` items (dicts with ``"image"`` 3xHxW and ``"keypoints"`` Px3).

        Args:
            dataset: indexable dataset, e.g. ``cpm_lab.data.SyntheticPoses``.
            n_images: use items ``0 .. n_images - 1`` (default: all); ignored when ``indices`` given.
            seed: seeds background sampling, fold assignment and the tree ensembles.
            indices: explicit item indices to train on.
            progress: show tqdm progress bars.
        """
        if indices is None:
            total = len(dataset)
            n_images = total if n_images is None else int(n_images)
            if not 1 <= n_images <= total:
                raise ValueError(f"n_images must be in 1..{total} (len(dataset)), got {n_images}")
            indices = range(n_images)
        t0, cpu0 = time.perf_counter(), time.process_time()
        images, keypoints = [], []
        for i in _tqdm(indices, progress, desc="load images"):
            item = dataset[int(i)]
            if not isinstance(item, dict) or "image" not in item or "keypoints" not in item:
                raise ValueError(f"dataset[{i}] must be a dict with 'image' and 'keypoints'; got {type(item).__name__}")
            images.append(torch.as_tensor(item["image"]).float())
            keypoints.append(np.asarray(item["keypoints"], dtype=np.float32))
        load_seconds = time.perf_counter() - t0
        self.fit_arrays(torch.stack(images), np.stack(keypoints), seed=seed, progress=progress)
        # Report the whole fit, reading/rendering the dataset items included.
        self.fit_info_.update(load_seconds=load_seconds, fit_seconds=time.perf_counter() - t0,
                              cpu_seconds=time.process_time() - cpu0)
        return self

    def fit_arrays(self, images, keypoints, seed: int = 0, progress: bool = True) -> "PoseMachine":
        """Train every stage from arrays.

        Args:
            images: N x 3 x H x W float in [0, 1], H = W = ``config.image_size``.
            keypoints: (N, P, 3) x, y in input pixels and visibility.
            seed: seeds background sampling, fold assignment and the ensembles.

        Stage-wise stacking: the images are split into ``n_folds`` folds. For stage t, one
        classifier per fold is trained on the other folds and predicts the held-out fold's
        beliefs; those held-out beliefs feed the context features of stage t + 1. The stage-t
        model kept for inference is then refitted on all images (the last stage skips the fold
        models; nothing consumes its held-out beliefs).

        After fitting, ``fit_info_`` holds ``n_images``, ``n_samples`` (sampled cells),
        ``class_counts`` (per class, background last), ``stage_seconds``, ``fit_seconds`` (wall),
        ``cpu_seconds`` (process CPU, all threads; both include reading the dataset when called
        through :meth:`fit`, which adds ``load_seconds``) and ``heldout_epe_px``: for stages 1..T-1,
        the mean pixel error of the held-out beliefs handed to the next stage (what the next
        stage learns from; the in-sample beliefs of the refitted stage model are far better,
        which is why they must not be used).
        """
        c = self.config
        t0, cpu0 = time.perf_counter(), time.process_time()
        arr = _as_numpy_images(images, c.image_size)
        kp = np.asarray(keypoints, dtype=np.float32)
        n = arr.shape[0]
        if kp.shape != (n, c.num_parts, 3):
            raise ValueError(f"keypoints must have shape ({n}, {c.num_parts}, 3) to match images; got {kp.shape}")
        if n < c.n_folds:
            raise ValueError(f"need at least n_folds={c.n_folds} images to fit, got {n}")
        rng = np.random.default_rng(seed)
        g = c.grid_size

        feats = np.stack([_image_features_one(im, c.orientations)
                          for im in _tqdm(arr, progress, desc="image features")])  # (N, G, G, Fi)
        labels = location_labels(kp, g, c.stride, c.label_radius)
        sample = _sample_locations(labels, c.num_parts, c.background_ratio, rng)
        y = labels.reshape(-1)[sample]
        fold = rng.permutation(n) % c.n_folds  # image -> fold
        sample_fold = fold[sample // (g * g)]

        self.models_ = []
        prev = None  # held-out beliefs (N, P+1, G, G) of the previous stage
        info = {"n_images": n, "n_samples": int(len(sample)),
                "class_counts": np.bincount(y, minlength=c.num_parts + 1).tolist(), "stage_seconds": [],
                "heldout_epe_px": []}
        bar = _bar(c.num_stages * (c.n_folds + 1) - c.n_folds, progress, desc="fit stage models")
        for t in range(1, c.num_stages + 1):
            ts = time.perf_counter()
            x = self._sample_rows(feats, prev, sample)
            stage_seed = int(rng.integers(2**31 - 1))
            if t < c.num_stages:
                held = np.zeros((n, c.num_parts + 1, g, g), np.float32)
                for k in range(c.n_folds):
                    model = self._new_estimator(stage_seed + k + 1).fit(x[sample_fold != k], y[sample_fold != k])
                    imgs = np.flatnonzero(fold == k)
                    held[imgs] = self._predict_stage(model, feats[imgs], None if prev is None else prev[imgs])
                    bar.update(1)
                prev = held
                info["heldout_epe_px"].append(_mean_error_px(held, kp, self.codec))
            self.models_.append(self._new_estimator(stage_seed).fit(x, y))
            bar.update(1)
            info["stage_seconds"].append(time.perf_counter() - ts)
        bar.close()
        info["fit_seconds"] = time.perf_counter() - t0
        info["cpu_seconds"] = time.process_time() - cpu0  # all threads of this process
        self.fit_info_ = info
        return self

    def _sample_rows(self, feats: np.ndarray, prev: np.ndarray | None, sample: np.ndarray,
                     chunk: int = 64) -> np.ndarray:
        """Classifier inputs at the sampled cells: image features (+ context from ``prev``).

        ``sample`` holds sorted flat indices into (N, G, G); context is computed per chunk of
        images so the full (N, G, G, F_ctx) array never exists.
        """
        n, gh, gw, _ = feats.shape
        per = gh * gw
        parts = []
        for s in range(0, n, chunk):
            lo, hi = np.searchsorted(sample, [s * per, min(s + chunk, n) * per])
            idx = sample[lo:hi] - s * per
            x = feats[s:s + chunk].reshape(-1, feats.shape[-1])[idx]
            if prev is not None:
                ctx = self.context(prev[s:s + chunk])
                x = np.concatenate([x, ctx.reshape(-1, ctx.shape[-1])[idx]], 1)
            parts.append(x)
        return np.concatenate(parts)

    def _predict_stage(self, model, feats: np.ndarray, prev: np.ndarray | None, chunk: int = 64) -> np.ndarray:
        """Beliefs (n, P+1, G, G) of one stage for images with image features (n, G, G, Fi) and
        the previous stage's beliefs ``prev`` (n, P+1, G, G) or None for stage 1."""
        out = []
        for s in range(0, feats.shape[0], chunk):
            f = feats[s:s + chunk]
            x = f.reshape(-1, f.shape[-1])
            if prev is not None:
                ctx = self.context(prev[s:s + chunk])
                x = np.concatenate([x, ctx.reshape(x.shape[0], -1)], 1)
            out.append(self._proba_maps(model, x, f.shape[0]))
        return np.concatenate(out)

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_beliefs(self, images: torch.Tensor, batch_size: int = 64) -> list[torch.Tensor]:
        """Belief maps of every stage.

        Args:
            images: N x 3 x H x W float in [0, 1] (H = W = ``config.image_size``), any device.
            batch_size: images per classifier call (bounds memory).
        Returns:
            list of ``num_stages`` tensors (N, P + 1, G, G), G = image_size // 8, class
            probabilities per cell (channels sum to 1), background last, on ``images.device``.
        """
        if not self.is_fitted:
            raise RuntimeError("this PoseMachine is not fitted: call fit(...) or PoseMachine.load(path) first")
        device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
        arr = _as_numpy_images(images, self.config.image_size)
        out = [[] for _ in range(self.config.num_stages)]
        for s in range(0, arr.shape[0], batch_size):
            feats = np.stack([_image_features_one(im, self.config.orientations) for im in arr[s:s + batch_size]])
            prev = None
            for t, model in enumerate(self.models_):
                prev = self._predict_stage(model, feats, prev)
                out[t].append(prev)
        return [torch.from_numpy(np.concatenate(o)).to(device) for o in out]

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write config + fitted classifiers to ``path`` with joblib (a pickle; see :meth:`load`)."""
        import joblib
        import sklearn

        if not self.is_fitted:
            raise RuntimeError("cannot save an unfitted PoseMachine; call fit(...) first")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": self.config.to_dict(),
                     "sklearn_version": sklearn.__version__, "models": self.models_, "fit_info": self.fit_info_},
                    path, compress=3)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PoseMachine":
        """Load a pose machine written by :meth:`save`.

        Security: the file is a pickle and loading it can execute arbitrary code. Only load
        files you created or trust.
        Raises FileNotFoundError for a missing file, ValueError for a file that is not a
        pose-machine file of a supported format version; warns on a scikit-learn version mismatch.
        """
        import joblib
        import sklearn

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pose machine file not found: {path}")
        try:
            blob = joblib.load(path)
        except Exception as exc:  # corrupt / not a joblib file
            raise ValueError(f"{path} is not a readable pose machine file (joblib): {exc}") from exc
        if not isinstance(blob, dict) or blob.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not a cpm_lab pose machine file (expected format {FORMAT_NAME!r})")
        if blob.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} has pose machine format version {blob.get('version')!r}; "
                             f"this cpm_lab reads version {FORMAT_VERSION}")
        if blob.get("sklearn_version") != sklearn.__version__:
            warnings.warn(f"{path} was saved with scikit-learn {blob.get('sklearn_version')}, running "
                          f"{sklearn.__version__}: predictions may differ or fail", stacklevel=2)
        cfg = PoseMachineConfig.from_dict(blob["config"])
        pm = cls(cfg)
        if len(blob["models"]) != cfg.num_stages:
            raise ValueError(f"{path} holds {len(blob['models'])} stage models for num_stages={cfg.num_stages}")
        pm.models_ = list(blob["models"])
        pm.fit_info_ = dict(blob.get("fit_info", {}))
        return pm


def _mean_error_px(beliefs: np.ndarray, keypoints: np.ndarray, codec: CodecConfig) -> float:
    """Mean pixel distance between decoded beliefs and the visible ground-truth joints."""
    pred = decode(torch.from_numpy(beliefs), codec)[..., :2].numpy()
    vis = labelled_mask(keypoints)
    d = np.linalg.norm(pred - keypoints[..., :2], axis=-1)
    return float(d[vis].mean()) if vis.any() else float("nan")


def _tqdm(it, enabled: bool, **kw):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, **kw)


class _NoBar:
    def update(self, n: int = 1):
        pass

    def close(self):
        pass


def _bar(total: int, enabled: bool, **kw):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, **kw)
