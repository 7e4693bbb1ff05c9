"""One registry of techniques, read by the CLI, the pipeline, the site and the tests.

A technique knows nothing of the pipeline or the site: it takes a model, a
batch, per-item targets and (for layer methods) a layer name, and returns maps
or arrays. Families:

* ``gradient``: pixel attribution from input gradients, ``[N, H, W]`` at input size;
* ``perturbation``: pixel attribution from forward passes on altered inputs, ``[N, H, W]``;
* ``cam``: class activation maps at a layer's resolution ``[N, h, w]``;
* ``baseline``: maps that ignore the model (random, centre, edges), scored like the rest;
* ``view``: model and data-set views that are not scored (feature maps, filters, top
  patches, the t-SNE embedding);
* ``synthesis``: images optimised through the model (filter visualisation, class models,
  DeepDream, inversion, fooling), run by ``reportgen.learned``.
"""

# Importing the family modules fills the registry (one file per family).
from . import (  # noqa: E402, F401
    baselines,
    cam,
    deeplift,
    extremal,
    fullgrad,
    gradient,
    lrp,
    neurons,
    perturbation,
    plugins,
    synthesis,
    views,
)
from .registry import (  # noqa: F401  (the package's interface)
    LAYERS,
    QUALITIES,
    REGISTRY,
    Technique,
    UnknownMethod,
    get,
    parse_setting,
    register,
    select,
)
