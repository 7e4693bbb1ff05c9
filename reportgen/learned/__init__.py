"""What the network learned: the views that are not saliency maps.

Each registers a ``View`` (``common``): how the engine drives it, in up to three kinds of
work, each resumable like the maps' units:

* per batch: feature-map grids, penultimate features for the embedding, each channel's
  peak for the top patches, inversions at several depths, fooling images;
* once per run, after every batch: the channel pages, the first layer's filters,
  Zeiler & Fergus's top-9 patches with deconvnet projections and silent channels,
  filter visualisations (both recipes), class models, DeepDream, and the cascading
  randomisation sanity check;
* without a model, in ``finish``: t-SNE of the features.

Images are written under ``img/learned/<technique>/``; values go to the long table
``synthesis.csv`` (technique, layer, item, variant, metric, value).
"""

# Importing the modules registers the views, in the run-wide order (channel pages first).
from . import channels, optimised, sanity  # noqa: F401
from .channels import PATCHES, embedding_rows  # noqa: F401  (the package's interface)
from .common import AFTER, TOP_CHANNELS, VIEWS, View, after, owed, register_view  # noqa: F401
from .optimised import INVERSION_DEPTHS, PIXEL_RECIPE_UNITS, inversion_layers  # noqa: F401
from .sanity import INDEPENDENT_IMAGES, SANITY, SANITY_IMAGES  # noqa: F401
