"""Pose datasets. Every dataset yields the same sample dict:

============  ===========================  ==================================================
key           type, shape                  meaning
============  ===========================  ==================================================
image         float32 tensor (3, H, W)     RGB in [0, 1]
keypoints     float32 tensor (14, 3)       LSP-14 joints (cpm_lab.skeleton): x, y in pixels of
                                           ``image`` (pixel centres at integer coordinates),
                                           joint flag 2 = visible, 1 = labelled but
                                           occluded, 0 = missing (cpm_lab.targets)
center        float32 tensor (2,)          person centre (x, y) in pixels
scale         float32 tensor ()            person size: a box of side scale * SCALE_UNIT_PX
                                           pixels holds the person (MPII convention)
index         int                          position of the item in its dataset
============  ===========================  ==================================================
"""
from cpm_lab.data.synthetic import DIFFICULTIES, SCALE_UNIT_PX, SyntheticPoses

__all__ = ["DIFFICULTIES", "SCALE_UNIT_PX", "SyntheticPoses"]
from cpm_lab.data.augment import Augment, AugmentParams
from cpm_lab.data.baseline import ImageMeanPose, MeanPoseBaseline
from cpm_lab.data.coco import COCOKeypoints
from cpm_lab.data.crop import PersonCrops, PoseDataError, crop_batch, warp_batch
from cpm_lab.data.lsp import LSP
from cpm_lab.data.mpii import MPII

__all__ += ["Augment", "AugmentParams", "COCOKeypoints", "ImageMeanPose", "LSP", "MPII", "MeanPoseBaseline",
            "PersonCrops", "PoseDataError", "crop_batch", "warp_batch"]
