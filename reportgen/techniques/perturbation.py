"""Forward-only attributions from altered inputs or activations (batched, no gradients).

Four techniques, two shared pieces:

* :func:`perturbed_scores` runs many altered copies of the batch's items through the
  model, ``batch_size`` rows per forward pass, and returns each row's target score.
  Rows are ``(item, variant)`` pairs, so a pass can mix items and no pass is wasted
  at item boundaries;
* :func:`minmax` scales maps to [0, 1] and sends a constant map to 0, so identical
  masked inputs can be recognised and run once.

Occlusion and RISE alter pixels and read the model's probabilities (their papers' scores:
a softmax, or each class's sigmoid for a multi-label model, ``--output sigmoid``);
Score-CAM and Ablation-CAM alter the input with, or the inside of, a layer's
activations and read logits, as pytorch-grad-cam and torchcam do. Every ``run`` works
under ``torch.inference_mode()`` with the model in eval mode, restores the model after,
and removes its hooks on exit.
"""

from __future__ import annotations

# The shared pieces, the pixel methods and the layer methods live in sibling modules; their
# names stay importable from here.
from .perturbation_cams import (  # noqa: F401
    Replay,
    ablation_weights,
    ablationcam,
    head_drops,
    prefix_modules,
    same_logits,
    scorecam,
    tail_drops,
)
from .perturbation_passes import (  # noqa: F401
    CPU_ROWS,
    GPU_MAX_ROWS,
    MEMORY_SHARE,
    PROGRESS_ROWS,
    Build,
    Targets,
    all_rows,
    forward_only,
    layer_activations,
    minmax,
    perturbed_scores,
    pick,
    probe_row_bytes,
    rows_for_memory,
    rows_per_pass,
)
from .perturbation_pixels import (  # noqa: F401
    RiseMasks,
    fill_value,
    occlusion,
    rise,
    spans,
    window_starts,
)
from .registry import Technique, register

# --- registry ------------------------------------------------------------------------------

register(
    Technique(
        name="occlusion",
        title="Occlusion",
        family="perturbation",
        paper="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
        url="https://arxiv.org/abs/1311.2901",
        summary="Slide a square patch (window 32 px, stride 16 px) over the image and record "
        "the target's probability each time (softmax; sigmoid under --output sigmoid). "
        "M(u) = mean over the windows W ∋ u of (P_c(x) − P_c(x with W filled)): how much "
        "hiding a pixel's neighbourhood costs.",
        cost="1 + P_H·P_W forward passes per image: 170 at 224 px (13 × 13 windows)",
        run=occlusion,
        needs_gradient=False,
        bf16=True,
        notes="The patch is the value 0 in the model's input space, i.e. the data set's mean "
        "colour for mean/std-normalised inputs (grey for EfficientNet-Lite0's 0.5/0.5); "
        "pass fill= for another value. Window and stride are in pixels and are not scaled "
        "with the input size. Where the stride does not divide (side − window), the last "
        "window is placed flush with the right/bottom edge so every patch has the same "
        "size; captum's Occlusion instead truncates that last patch at the edge. Otherwise "
        "identical to captum.attr.Occlusion applied to softmax probabilities.",
    )
)
register(
    Technique(
        name="rise",
        title="RISE",
        family="perturbation",
        paper="Petsiuk, Das & Saenko, RISE: Randomized Input Sampling for Explanation of "
        "Black-box Models, BMVC 2018",
        url="https://arxiv.org/abs/1806.07421",
        summary="Draw N = 4000 random masks: a 7 × 7 grid of cells kept with probability "
        "p = 0.5, up-sampled bilinearly to 8/7 of the image and cropped at a random shift. "
        "S = Σ_i P_c(x ⊙ M_i) · M_i / (N · p): the expected target probability given that "
        "a pixel is kept.",
        cost="4000 forward passes per image (one per mask), no backward",
        run=rise,
        presets={"fast": {"masks": 500, "centred": True}},
        why="Fast preset: 500 masks (an eighth of the paper's passes) with the centred "
        "estimator P̄ + Σ_i (P_i − P̄) M_i / (N p), which estimates the same expectation: "
        "the paper's sum also carries P̄ times the drawn masks' density, which varies from "
        "pixel to pixel (by 2 % of P̄ at 1000 masks) in the same pattern on every image and "
        "swamps the signal where the class probability barely moves under masking. "
        "Measured on 4 default photos against the 4000-mask paper map (python -m "
        "evaluation.presets --only rise,rise_centred): mean r 0.879 for 500 centred masks "
        "(0.817 / 0.906 at 250 / 1000), against 0.852 for 1000 masks of the paper's sum "
        "(the fast preset before; 0.821 at 500); two 4000-mask paper maps of different "
        "seeds agree at 0.80 (evaluation/bench/presets/cpu-2core.json).",
        needs_gradient=False,
        bf16=True,
        notes="Masks multiply the model's (normalised) input, so a hidden pixel becomes 0 "
        "there, the data set's mean colour, as in the authors' code. Masks come from a "
        "generator seeded by the run's --seed (0 by default) and are shared by every image, so "
        "maps are reproducible. "
        "Up-sampling is bilinear with half-pixel centres and edge clamping (the authors use "
        "skimage's resize with mode='reflect'; only the cropped-away border differs). No "
        "reference library ships RISE: tested against its expectation on hand-built models.",
    )
)
register(
    Technique(
        name="scorecam",
        title="Score-CAM",
        family="cam",
        paper="Wang et al., Score-CAM: Score-Weighted Visual Explanations for Convolutional "
        "Neural Networks, CVPR workshops 2020",
        url="https://arxiv.org/abs/1910.01279",
        summary="Each channel A_k, min-max normalised to [0, 1] and up-sampled, masks the "
        "input; its weight is the softmax over channels of the target logits of the masked "
        "images, w_k = softmax_k(y_c(x ⊙ s(U(A_k)))). Map = ReLU(Σ_k w_k A_k).",
        cost="1 forward pass + 1 per non-constant channel of the layer + 1 shared by all "
        "constant ones: at most 1280 at Lite0's bn2 (526 on the cat photo, whose other 754 "
        "channels are all zero), 1152 at blocks.5.3.bn2",
        run=scorecam,
        presets={"fast": {"channels": 64}},
        why="Fast preset: each image's 64 channels of largest spatial variance (Faster "
        "Score-CAM's choice). At Lite0's bn2, on 6 default photos (528 to 901 live "
        "channels each), the maps correlate with every channel's at mean r = 0.987 (min "
        "0.954, the misclassified astronaut); 128 channels: 0.993 (min 0.970); 256: 0.999. "
        "Passes per image drop from 500-950 to 65.",
        needs_gradient=False,
        bf16=True,
        notes="Weights as in the paper's Algorithm 1, pytorch-grad-cam and torchcam: a "
        "softmax over channels of the target logits (the paper subtracts a baseline's "
        "logit first, which a softmax cancels). The authors' released code instead weights "
        "by each masked image's softmax class probability. Channels are normalised at the "
        "layer's resolution, then up-sampled with half-pixel centres, as torchcam does and "
        "as reportgen up-samples every map (identical to torchcam). pytorch-grad-cam "
        "up-samples with align_corners=True, which moves mask borders by up to half a cell; "
        "the channel softmax amplifies that, so at Lite0's blocks.5 (7 × 7) the two "
        "conventions' maps correlate at r = 0.82 to 0.997 on three photos. "
        "align_corners=True reproduces pytorch-grad-cam (r = 1.000). Constant channels "
        "(all-zero masks) share one forward pass.",
    )
)
register(
    Technique(
        name="ablationcam",
        title="Ablation-CAM",
        family="cam",
        paper="Desai & Ramaswamy, Ablation-CAM: Visual Explanations for Deep Convolutional "
        "Network via Gradient-free Localization, WACV 2020",
        url="https://openaccess.thecvf.com/content_WACV_2020/html/Desai_Ablation-CAM_Visual_"
        "Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_"
        "2020_paper.html",
        summary="Zero one channel k of the layer and rerun the rest of the network: "
        "w_k = (y_c − y_c^k) / y_c, the relative drop of the target logit. "
        "Map = ReLU(Σ_k w_k A_k).",
        cost="1 forward pass where the layer feeds global average pooling and the linear "
        "classifier (Lite0's bn2): every y_c^k in closed form. Elsewhere 1 forward pass + 1 "
        "pass through the network after the layer only per channel not already all zero "
        "(at most 1152 at Lite0's blocks.5.3.bn2, each running the rest of that block, blocks.6 "
        "and the head), + 2 rows per "
        "image that check the shortcut; whole-network passes where it fails that check",
        run=ablationcam,
        needs_gradient=False,
        notes="Channels are always ablated to 0, as in the paper. pytorch-grad-cam zeroes "
        "only when the layer's minimum is exactly 0 and otherwise writes (minimum − 10⁷), "
        "which changes the result at layers without a final ReLU (e.g. Lite0's blocks.5). "
        "Channels already all zero get w_k = 0 without a forward pass. As in the paper and "
        "pytorch-grad-cam, a negative target logit y_c flips the sign of every weight. "
        "Where the clean logits equal classifier(mean_ij(A)) (checked on every call), zeroing "
        "A_k lowers y_c by exactly W[c, k] · mean_ij(A_k), so no ablated pass runs. Elsewhere "
        "the modules that finished before the layer return their clean outputs instead of "
        "running again (skip connections around the layer included); the shortcut must "
        "reproduce the clean logits first, else each row runs the whole network as "
        "pytorch-grad-cam does. Same weights as whole-network passes (float rounding).",
        signed="Zeroing a channel is defined at any layer, but pytorch-grad-cam's convention "
        "(the channel set to its minimum − 10⁷ where that minimum is not 0) assumes a ReLU "
        "follows: at a signed layer the two give different maps, so "
        "figures published with that library do not carry over.",
    )
)
