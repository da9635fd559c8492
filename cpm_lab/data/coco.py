"""COCO person-keypoints loader: one person-centred sample per annotated person.

Reads the standard COCO keypoints JSON (``images``, ``annotations``, ``categories``): each
annotation has ``keypoints`` (17 x [x, y, v], v = 0 not labelled, 1 labelled but occluded,
2 visible), ``num_keypoints`` and ``bbox`` [x, y, w, h]. People with no labelled keypoints
(``num_keypoints == 0``) and crowd regions (``iscrowd == 1``) are not samples; they are
counted in ``num_unlabelled`` / ``num_crowd``, not treated as errors.

Person box: centred on the bbox centre (COCO boxes are in pixel-edge coordinates, so the centre
is shifted by -0.5 to cpm_lab's pixel-centre convention), side ``max(w, h) * box_pad`` (default
1.0: COCO boxes already enclose the whole visible person). COCO's v is cpm_lab's joint flag
(``cpm_lab.targets``: 2 visible, 1 labelled but occluded, 0 missing). ``parts="lsp"`` maps to
LSP-14 with ``skeleton.to_lsp(..., "coco")`` (neck and head top are approximations, see
``skeleton.COCO_TO_LSP``); ``parts="coco"`` keeps the 17 native keypoints. Keypoint
coordinates are used as given (0-based).

Cite: T.-Y. Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import skeleton
from ..targets import MISSING, VISIBLE
from .annotations import annotation_problem, check_on_error
from .crop import DEFAULT_MARGIN, PersonCrops, PoseDataError
from .mpii import load_json_file


def _annotation_problem(ann: dict) -> str | None:
    try:
        k = np.asarray(ann["keypoints"], dtype=np.float64)
        b = np.asarray(ann["bbox"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        return f"missing or non-numeric keypoints/bbox ({type(exc).__name__}: {exc})"
    if k.shape != (51,):
        return f"keypoints must be 17 x [x, y, v] = 51 numbers; got shape {k.shape}"
    if b.shape != (4,) or not np.isfinite(b).all() or b[2] <= 0 or b[3] <= 0:
        return f"bbox must be [x, y, w, h] with w, h > 0; got {ann['bbox']!r}"
    k = k.reshape(17, 3)
    if not np.isfinite(k[:, 2]).all():
        return "NaN visibility flag"
    return None


class COCOKeypoints(PersonCrops):
    """COCO person-keypoint crops, one sample per annotated, non-crowd person.

    Args:
        annotation_json: COCO keypoints JSON file.
        image_dir: folder with the images' ``file_name`` files.
        image_size: side S of the square crops in pixels.
        parts: "lsp" (14 joints via ``skeleton.to_lsp``) or "coco" (native 17).
        margin: crop side / person box side.
        box_pad: person box side / max(bbox w, h).
        min_keypoints: people with fewer labelled keypoints are not samples (default 1).
        on_error, validate_images, cache, metadata: see ``PersonCrops``.

    Attributes ``annotation_ids`` and ``image_ids`` give each sample's COCO ids.
    """

    _per_sample = PersonCrops._per_sample + ("annotation_ids", "image_ids")

    def __init__(self, annotation_json: str | os.PathLike, image_dir: str | os.PathLike,
                 image_size: int = 368, parts: str = "lsp", *, margin: float = DEFAULT_MARGIN,
                 box_pad: float = 1.0, min_keypoints: int = 1, on_error: str = "raise",
                 validate_images: bool = False, cache: bool = False, metadata: bool = True):
        check_on_error(on_error)
        if parts not in ("lsp", "coco"):
            raise ValueError(f"parts must be 'lsp' or 'coco', got {parts!r}")
        self.parts = parts
        data = load_json_file(annotation_json, "COCO")
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
                or not isinstance(data.get("annotations"), list):
            raise PoseDataError(f"{annotation_json}: expected a COCO JSON object with 'images' and "
                                f"'annotations' lists")
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {image_dir}")
        files, sizes = {}, {}
        for img in data["images"]:
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise PoseDataError(f"{annotation_json}: every image entry needs 'id' and 'file_name'; got {img!r}")
            files[img["id"]] = img["file_name"]
            if all(isinstance(img.get(k), (int, float)) and img[k] > 0 for k in ("width", "height")):
                sizes[img["id"]] = (img["width"], img["height"])  # lets the annotation checks run now
        cats = data.get("categories") or []
        person_ids = {c["id"] for c in cats if isinstance(c, dict) and c.get("keypoints")} or {1}

        kps, centers, boxes, paths, sources, problems = [], [], [], [], [], {}
        self.annotation_ids, self.image_ids = [], []
        self.num_unlabelled = self.num_crowd = 0
        for a, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or ann.get("category_id", 1) not in person_ids:
                continue
            if ann.get("iscrowd", 0):
                self.num_crowd += 1
                continue
            i = len(paths)
            name = files.get(ann.get("image_id"))
            paths.append(str(image_dir / name) if name is not None else "")
            sources.append(f"{annotation_json} annotation {a} (id {ann.get('id')}, image "
                           f"{name or ann.get('image_id')})")
            why = _annotation_problem(ann) if name is not None else \
                f"image_id {ann.get('image_id')!r} not found in 'images'"
            k = np.zeros((17, 3))
            c, box = np.zeros(2), 1.0
            if why is None:
                k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3).copy()
                k[:, 2] = np.clip(np.round(k[:, 2]), MISSING, VISIBLE)  # COCO's v is cpm_lab's flag
                labelled = int((k[:, 2] > 0).sum())
                if labelled < max(1, min_keypoints) or ann.get("num_keypoints", labelled) == 0:
                    self.num_unlabelled += 1
                    paths.pop(), sources.pop()
                    continue
                x, y, w, h = (float(v) for v in ann["bbox"])
                c = np.array([x + w / 2 - 0.5, y + h / 2 - 0.5])  # bbox edges -> pixel centres
                box = max(w, h) * box_pad
                why = annotation_problem(k, c, box, skeleton.COCO_JOINT_NAMES, sizes.get(ann.get("image_id")))
            if why is not None:
                problems[i] = why
            kps.append(k)
            centers.append(c)
            boxes.append(box)
            self.annotation_ids.append(ann.get("id"))
            self.image_ids.append(ann.get("image_id"))
        if not paths:
            raise PoseDataError(f"no annotations in {annotation_json}: no person with labelled keypoints "
                                f"({self.num_unlabelled} without, {self.num_crowd} crowd region(s))")
        kp = np.array(kps, dtype=np.float64).reshape(-1, 17, 3)
        kp, self.joint_names, self.flip_index = skeleton.joint_set(kp, "coco", parts)
        self._setup(name=f"COCOKeypoints({Path(annotation_json).name})", paths=paths, keypoints=kp,
                    centers=np.array(centers).reshape(-1, 2), boxes=np.array(boxes), sources=sources,
                    problems=problems, image_size=image_size, margin=margin, on_error=on_error,
                    validate_images=validate_images, cache=cache, metadata=metadata)
        kept = set(self.sources)
        keep = [s in kept for s in sources]
        self.annotation_ids = [x for x, k in zip(self.annotation_ids, keep) if k]
        self.image_ids = [x for x, k in zip(self.image_ids, keep) if k]
