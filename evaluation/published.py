"""Published figures of the metrics we compute, as their papers and libraries published them, so the
site can set ours beside them. Every row names its model, data and source: the figures
are only comparable in kind (other models, other images), never in value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    metric: str  # our metric id (metrics.csv), same unit as ours (% where ours are %)
    method: str  # our technique name
    value: float
    model: str
    data: str
    source: str


GCPP = "Grad-CAM++ (Chattopadhay et al. 2018, arXiv v4), Tables 1/8/10"
SCORECAM = "Score-CAM (Wang et al. 2020), Tables 1-3"
TORCHRAY = "TorchRay pointing-game benchmark (Fong et al. 2019), 15 px, mean per class, all"
TORCHCAM = "torchcam README (fractions there, % here)"
IMAGENET = "ILSVRC12 val"
IMAGENETTE = "Imagenette val"
SCORECAM_DATA = "2000 ILSVRC12 val images, top 50 % of pixels kept"

PUBLISHED = [
    Published("average_drop", "gradcam", 46.56, "VGG-16", IMAGENET, GCPP),
    Published("average_drop", "gradcampp", 36.84, "VGG-16", IMAGENET, GCPP),
    Published("increase_in_confidence", "gradcam", 13.42, "VGG-16", IMAGENET, GCPP),
    Published("increase_in_confidence", "gradcampp", 17.05, "VGG-16", IMAGENET, GCPP),
    Published("average_drop", "gradcam", 30.36, "ResNet-50", IMAGENET, GCPP),
    Published("average_drop", "gradcampp", 28.90, "ResNet-50", IMAGENET, GCPP),
    Published("increase_in_confidence", "gradcam", 22.11, "ResNet-50", IMAGENET, GCPP),
    Published("increase_in_confidence", "gradcampp", 22.16, "ResNet-50", IMAGENET, GCPP),
    Published("average_drop", "gradcam", 26.86, "ResNet-18", IMAGENETTE, TORCHCAM),
    Published("average_drop", "gradcampp", 52.71, "ResNet-18", IMAGENETTE, TORCHCAM),
    Published("average_drop", "layercam", 17.12, "ResNet-18", IMAGENETTE, TORCHCAM),
    Published("increase_in_confidence", "gradcam", 22.50, "ResNet-18", IMAGENETTE, TORCHCAM),
    Published("increase_in_confidence", "gradcampp", 19.62, "ResNet-18", IMAGENETTE, TORCHCAM),
    Published("increase_in_confidence", "layercam", 28.19, "ResNet-18", IMAGENETTE, TORCHCAM),
    Published("average_drop_top50", "rise", 47.0, "VGG-16", SCORECAM_DATA, SCORECAM),
    Published("average_drop_top50", "gradcam", 47.8, "VGG-16", SCORECAM_DATA, SCORECAM),
    Published("average_drop_top50", "gradcampp", 45.5, "VGG-16", SCORECAM_DATA, SCORECAM),
    Published("average_drop_top50", "scorecam", 31.5, "VGG-16", SCORECAM_DATA, SCORECAM),
    Published("increase_top50", "rise", 14.0, "VGG-16", SCORECAM_DATA, SCORECAM),
    Published("increase_top50", "gradcam", 19.6, "VGG-16", SCORECAM_DATA, SCORECAM),
    Published("increase_top50", "gradcampp", 18.9, "VGG-16", SCORECAM_DATA, SCORECAM),
    Published("increase_top50", "scorecam", 30.6, "VGG-16", SCORECAM_DATA, SCORECAM),
    Published("insertion_auc", "gradcam", 0.357, "VGG-16", IMAGENET, SCORECAM),
    Published("insertion_auc", "gradcampp", 0.346, "VGG-16", IMAGENET, SCORECAM),
    Published("insertion_auc", "scorecam", 0.386, "VGG-16", IMAGENET, SCORECAM),
    Published("deletion_auc", "gradcam", 0.089, "VGG-16", IMAGENET, SCORECAM),
    Published("deletion_auc", "gradcampp", 0.082, "VGG-16", IMAGENET, SCORECAM),
    Published("deletion_auc", "scorecam", 0.077, "VGG-16", IMAGENET, SCORECAM),
    Published("energy_pointing_game", "saliency", 41.3, "VGG-16", IMAGENET, SCORECAM),
    Published("energy_pointing_game", "smoothgrad", 42.4, "VGG-16", IMAGENET, SCORECAM),
    Published("energy_pointing_game", "integrated_gradients", 44.7, "VGG-16", IMAGENET, SCORECAM),
    Published("energy_pointing_game", "rise", 36.3, "VGG-16", IMAGENET, SCORECAM),
    Published("energy_pointing_game", "gradcam", 48.1, "VGG-16", IMAGENET, SCORECAM),
    Published("energy_pointing_game", "gradcampp", 49.3, "VGG-16", IMAGENET, SCORECAM),
    Published("energy_pointing_game", "scorecam", 63.7, "VGG-16", IMAGENET, SCORECAM),
    Published("pointing_game", "saliency", 76.3, "VGG-16", "VOC07 test", TORCHRAY),
    Published("pointing_game", "deconvnet", 67.5, "VGG-16", "VOC07 test", TORCHRAY),
    Published("pointing_game", "guided_backprop", 75.9, "VGG-16", "VOC07 test", TORCHRAY),
    Published("pointing_game", "gradcam", 86.6, "VGG-16", "VOC07 test", TORCHRAY),
    Published("pointing_game", "rise", 86.9, "VGG-16", "VOC07 test", TORCHRAY),
    Published("pointing_game", "baseline_centre", 69.6, "VGG-16", "VOC07 test", TORCHRAY),
    Published("loc_0", "gradcam", 0.33, "VGG-16", "VOC 2012 val", GCPP),
    Published("loc_0.25", "gradcam", 0.28, "VGG-16", "VOC 2012 val", GCPP),
    Published("loc_0.5", "gradcam", 0.16, "VGG-16", "VOC 2012 val", GCPP),
    Published("loc_0", "gradcampp", 0.34, "VGG-16", "VOC 2012 val", GCPP),
    Published("loc_0.25", "gradcampp", 0.38, "VGG-16", "VOC 2012 val", GCPP),
    Published("loc_0.5", "gradcampp", 0.28, "VGG-16", "VOC 2012 val", GCPP),
]
# Win % of Grad-CAM++ over Grad-CAM (smaller drop on more images), GCPP Table 1: the pair
# (winner, other), the metric, and the published figures per model
WIN_PAIR = ("gradcampp", "gradcam")
WIN_METRIC = "average_drop"
PUBLISHED_WIN = [("VGG-16", 70.72), ("AlexNet", 86.56), ("ResNet-50", 60.51)]
