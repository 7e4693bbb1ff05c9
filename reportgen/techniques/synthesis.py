"""Synthesis: techniques that optimise an input image and show it.

All five share one loop, ``_optimise``: gradient ascent of a per-item objective with
respect to an image (or its Fourier coefficients), one item per unit, class or input
image, items batched. The model is put in eval mode with every parameter frozen for the
call (no parameter gradient is ever computed) and its flags are restored after.
Randomness comes from a local ``torch.Generator`` seeded by ``seed`` and drawn on the
CPU, so a seed gives the same images run after run.

Images live in DISPLAY space ``[0, 1]`` while they are optimised and are normalised with
the caller's ``mean``/``std`` right before the model; every function returns display
images ``[K, 3, H, W]`` in ``[0, 1]`` (detached, on the CPU) in a ``Synthesised``
record. Step sizes "in 0..255 units" are display steps of ``value / 255``.

A pass that needs a layer's activations stops right after that layer (``activations``),
so shallow layers cost a fraction of a full pass.
"""

from __future__ import annotations

# The shared machinery and the techniques live in sibling modules; their names stay
# importable from here.
from ..capture import activations  # noqa: F401
from .registry import Technique, register
from .synthesis_from_photos import (  # noqa: F401
    INVERSION_B,
    INVERSION_V,
    deepdream,
    fooling,
    inversion,
)
from .synthesis_machinery import (  # noqa: F401
    COLOR_CORRELATION_SVD_SQRT,
    Synthesised,
    _channel_means,
    _random_transform,
    _redirected_relus,
)
from .synthesis_maximisation import (  # noqa: F401
    CLASS_MODEL_REGULARISER,
    class_model,
    filter_vis,
)

# Settings of the references, for ``--quality paper``; the defaults fit a 2-core CPU run
# (EfficientNet-Lite0: 72 channels ~75 s, 12 classes ~32 s, 8 inversions <= 26 s).
PAPER_STEPS: dict[str, dict[str, object]] = {
    "filter_vis": {"steps": 512, "size": 128},  # lucid's render_vis: 512 steps at 128 px
    "class_model": {"steps": 512, "size": 224},  # lucid's budget at the model's input size
    "deepdream": {"octaves": 4, "steps": 10},  # the notebook's values are the defaults
    "inversion": {"steps": 400},  # run to convergence (the paper: SGD with momentum)
    "fooling": {"steps": 200},  # a cap: each image stops when it reaches its target
}


# --- Registry ----------------------------------------------------------------------------

register(
    Technique(
        name="filter_vis",
        title="Channel visualisation",
        family="synthesis",
        paper="Erhan et al. 2009; Olah, Mordvintsev & Schubert, Feature Visualization, "
        "Distill 2017 (lucid)",
        url="https://distill.pub/2017/feature-visualization/",
        summary="Activation maximisation, I* = argmax_I mean_xy a_lc(I): the image that "
        "most excites channel c of layer l, one per channel, the channels of a layer in one "
        "batch. Default (lucid): the image is parameterised by its Fourier coefficients "
        "scaled by 1/frequency, with decorrelated colour and a sigmoid; every step sees a "
        "randomly padded, jittered, scaled (0.9-1.1) and rotated (±10°) copy; Adam, lr "
        "0.05, 128 px; ReLUs pass a redirected gradient while a channel is silent, for the "
        "first 17 steps (lucid). "
        "param=pixel is Chollet's recipe, shown beside it with his notebook's 40 steps at "
        "150 px in both presets: grey plus noise, steps of 1/255 along the RMS-normalised "
        "gradient, no regulariser.",
        cost="steps forward+backward passes to each layer, for all its channels at once",
        run=filter_vis,
        presets={"fast": {"steps": 64}, "paper": PAPER_STEPS["filter_vis"]},
        why="Fast preset: 64 steps. With one channel of each of the 9 feature layers of "
        "EfficientNet-Lite0, 64 steps reach a median 81 % of the rise in the channel's mean "
        "that 512 steps reach (96 steps: 84 %, 48: 61 %; python -m evaluation.presets --only "
        "synthesis). Use --quality paper for images you publish.",
        notes="Lucid's transforms are folded into one affine resampling per image, each "
        "image with its own random draw.",
    )
)
register(
    Technique(
        name="class_model",
        title="Class model",
        family="synthesis",
        paper="Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, 2013",
        url="https://arxiv.org/abs/1312.6034",
        summary="I* = argmax_I S_c(I) - R(I): the image that maximises the logit S_c of a "
        "class (not its softmax, which can rise by lowering the others), one per class, in "
        "one batch. Regulariser: " + CLASS_MODEL_REGULARISER + ". Shown with the final "
        "image's probability for the class.",
        cost="steps forward+backward passes of the whole model",
        run=class_model,
        presets={"paper": PAPER_STEPS["class_model"]},
        why="Not shortened by the fast preset: its defaults (128 steps at 160 px) are "
        "already below the paper setting (512 steps at 224 px), reaching a median 74 % of "
        "its rise in the class logit on two photos' classes (64 steps: 68 %; python -m "
        "evaluation.presets --only synthesis). Use --quality paper for the full images.",
        notes="Simonyan et al. used plain gradient ascent with an L2 penalty only; the "
        "Fourier parameterisation and transforms (lucid) give far more legible images.",
    )
)
register(
    Technique(
        name="deepdream",
        title="DeepDream",
        family="synthesis",
        paper="Mordvintsev, Olah & Tyka, Inceptionism: Going Deeper into Neural Networks, "
        "Google Research Blog 2015",
        url="https://github.com/google/deepdream",
        summary="Gradient ascent from the photo on the L2 objective mean(phi_l(I)^2) of a "
        "layer, amplifying what the layer already sees: 4 octaves (scale 1.4) from small to "
        "full size with the detail carried up, 10 steps per octave, each after a random "
        "roll of up to 32 px, of size 1.5/255 times g / mean|g|. Low layers give strokes, "
        "high layers give object parts.",
        cost="octaves x steps forward+backward passes to the layer (small octaves cheaper)",
        run=deepdream,
        presets={"paper": PAPER_STEPS["deepdream"]},
    )
)
register(
    Technique(
        name="inversion",
        title="Feature inversion",
        family="synthesis",
        paper="Mahendran & Vedaldi, Understanding Deep Image Representations by Inverting "
        "Them, CVPR 2015",
        url="https://arxiv.org/abs/1412.0035",
        summary="From noise, I* = argmin ||phi(I') - phi(I)||^2 / ||phi(I)||^2 + "
        "lambda_a R_alpha(I') + lambda_tv R_TV(I'): an image the layer cannot tell from "
        "the photo. R_alpha is the alpha-norm (alpha 6) over H W B^alpha, R_TV the total "
        "variation (beta 2) over H W V^beta, with B = 80 and V = B/6.5 on 0..255 pixels; "
        "lambda_a = 0.001, lambda_tv = 0.1; Adam, lr 0.05 decayed to 0. What survives is "
        "what the layer keeps: deeper layers keep shapes and lose colour and texture.",
        cost="steps forward+backward passes to the layer",
        run=inversion,
        presets={"fast": {"steps": 32}, "paper": PAPER_STEPS["inversion"]},
        why="Fast preset: 32 steps (the learning rate still decays to 0 over them). At the "
        "4 depths a run inverts, on two photos, 32 steps remove a median 88 % of the "
        "feature error that 400 steps remove (50: 93 %, 100: 98 %; the least converged "
        "item, the deepest layer, 25 %; python -m evaluation.presets --only synthesis).",
        notes="The paper weighs both regularisers 1 after this normalisation; on our "
        "photos that outweighs the feature error and greys the image, hence the smaller "
        "weights. Optimised with Adam instead of SGD with momentum.",
    )
)
register(
    Technique(
        name="fooling",
        title="Fooling images",
        family="synthesis",
        paper="Szegedy et al., Intriguing properties of neural networks, 2013",
        url="https://arxiv.org/abs/1312.6199",
        summary="A targeted adversarial example by iterative FGSM: I += 1/255 sign(d log "
        "p_target / dI), clamped to [0, 1], until the model predicts the target class (each "
        "image stops on its own) or 64 steps pass. Shown: the photo, the perturbation "
        "(magnified) and the result, with the L2 and L-inf norms in 0..255 units and the "
        "steps taken.",
        cost="at most steps forward+backward passes (finished images leave the batch)",
        run=fooling,
        presets={"paper": PAPER_STEPS["fooling"]},
        notes="Szegedy et al. used box-constrained L-BFGS; iterative FGSM (Kurakin et al. "
        "2016) finds the same kind of imperceptible perturbation with one gradient a step.",
    )
)
