"""The one door from images to beliefs and keypoints.

::

    from cpm_lab.inference import evaluate, evaluate_protocol, load_model, predict

    model = load_model("tiny-synthetic")                 # a shipped model, or a checkpoint path
    out = predict(model, images)                         # images (N, 3, H, W) in [0, 1]
    out.beliefs[-1]                                      # last stage, (N, P + 1, H/8, W/8)
    out.keypoints[-1]                                    # last stage, (N, P, 3): x, y px, peak belief
    table = evaluate(model, dataset)                     # tidy per-stage, per-part PCK / AUC / EPE
    table = evaluate_protocol(model, lsp_test)           # the paper's LSP test, its way
    photo = predict_image(model, "me.jpg")               # one photo, keypoints in its pixels

Everything that runs a model on images goes through here: the metrics of a dataset, the
trainer's evaluation, both explorers, the CLI and every notebook. A model is a ``CPM`` or any
object that, like the classical ``PoseMachine``, has a ``codec`` and maps ``(images,
center_maps)`` to a list of per-stage beliefs.

Two ways to evaluate, two modules:

* ``core``: batches of images at the model's input size: ``predict``, ``predict_dataset`` and
  ``evaluate`` on a dataset's person crops. For the real-data loaders those crops come from the
  ground-truth joints, an oracle person box (the "gt-crop" protocol); handy for training curves,
  not comparable with published numbers.
* ``protocol``: the official CPM test on whole images (``run_benchmark.m``): ``locate_person``
  (LSP: the image centre and height), ``predict_person`` (a scale search whose beliefs are summed
  on the original image; arg-max pixels per stage), ``predict_protocol`` / ``evaluate_protocol``
  over a dataset's original images. ``resample`` holds the bicubic resizes it composes.
* ``probes``: changing a model's input to see what it relies on: ``Occluder`` and
  ``hidden_joint_errors`` (hide one joint of every person, each stage's error visible against
  hidden); ``centre_map_ablation``, ``two_person_image`` and ``two_person_probe`` (the centre
  map removed, displaced, or put on another person).
* ``photo``: one photo (a file or an array) with an optional person box: ``predict_image``
  returns per-stage keypoints and beliefs in the photo's own pixels (what ``cpm-lab predict``
  writes); ``person_item`` frames the person for the belief explorer.

The centre map tells a CPM which person to look at. Where no person centre is given it is
a Gaussian on the image centre (``targets.default_centers``), the one default of the package.
Test-time augmentation of ``predict`` follows the official testing code: ``flip`` averages with
the mirrored image (left/right channels swapped back, ``skeleton.flip_index``), ``scales``
resizes the input by each factor (rounded to a multiple of the stride) and averages the beliefs
resized back.
"""
from __future__ import annotations

from .core import Prediction, center_maps, evaluate, load_model, model_device, predict, predict_dataset, stage_outputs
from .photo import PhotoPrediction, person_item, predict_image, read_photo
from .probes import (
    CENTRE_CONDITIONS,
    Occluder,
    centre_map_ablation,
    hidden_joint_errors,
    two_person_image,
    two_person_probe,
)
from .protocol import (
    GREY,
    LSP_SCALES,
    LSP_TARGET,
    PROTOCOLS,
    PersonPrediction,
    ScalePlan,
    as_image,
    evaluate_protocol,
    load_image,
    locate_person,
    plan_scales,
    predict_person,
    predict_protocol,
    protocol_title,
)

__all__ = [
    "CENTRE_CONDITIONS", "GREY", "LSP_SCALES", "LSP_TARGET", "PROTOCOLS", "as_image", "center_maps",
    "centre_map_ablation", "evaluate", "evaluate_protocol", "hidden_joint_errors", "load_image", "load_model",
    "locate_person", "model_device", "Occluder", "person_item", "PersonPrediction", "PhotoPrediction", "plan_scales",
    "predict", "predict_dataset", "predict_image", "predict_person", "predict_protocol", "Prediction",
    "protocol_title", "read_photo", "ScalePlan", "stage_outputs", "two_person_image", "two_person_probe",
]
