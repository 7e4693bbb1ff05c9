"""CAM methods on token models (ViT, DeiT, Swin): outputs read as maps by their layout,
checked against pytorch-grad-cam given the matching ``reshape_transform``, on randomly
initialised timm models (no download)."""

import pytest
import torch

import reportgen
from reportgen.capture import Capture, record_outputs
from reportgen.layout import Layout, infer, layout_of, parse
from reportgen.models import default_cam_layer
from reportgen.techniques.cam import cam_maps

from .conftest import GRADIENT_CAM_PEERS, assert_correlated, pearson, runner_up

timm = pytest.importorskip("timm")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def vit_tokens(prefix: int):
    """pytorch-grad-cam's ViT tutorial transform, with ``prefix`` leading tokens."""

    def reshape(t: torch.Tensor) -> torch.Tensor:
        n, _, c = t.shape
        return t[:, prefix:, :].reshape(n, 14, 14, c).permute(0, 3, 1, 2)

    return reshape


# model, the layer pytorch-grad-cam's tutorials use (the last block's first norm), its
# reshape_transform for that model
CASES = {
    "vit_tiny_patch16_224": ("blocks.11.norm1", vit_tokens(1)),
    "deit_tiny_distilled_patch16_224": ("blocks.11.norm1", vit_tokens(2)),
    "swin_tiny_patch4_window7_224": ("layers.3.blocks.1.norm1", lambda t: t.permute(0, 3, 1, 2)),
}


@pytest.fixture(scope="module", params=list(CASES))
def token_model(request):
    torch.manual_seed(0)
    model = timm.create_model(request.param, pretrained=False, num_classes=10).eval()
    # A random head gives logits below 1 and gradients near 1e-3 at the token layers, so g²
    # is close to the epsilon (1e-6) pytorch-grad-cam adds to Grad-CAM++'s denominator,
    # which then shapes its map (r 0.72-0.83 at x1). Scaled x100 (DeiT's two heads are
    # averaged: x200), the logits are a trained model's tens and the peers agree (r >= 0.99;
    # measured: x10 0.83-0.99, x30 0.93-0.999). Much larger, 2 g² + ΣA g³ nears 0 somewhere
    # on a signed (LayerNorm) channel, where the formula is ill-posed (Swin x300: 0.98; see
    # test_reference's pinned signed case).
    heads = model.get_classifier()
    heads = heads if isinstance(heads, tuple) else (heads,)
    with torch.no_grad():
        for head in heads:
            head.weight.mul_(100.0 * len(heads))
    x = torch.randn(2, 3, 224, 224)
    return request.param, model, x


def test_the_default_layer_is_the_last_blocks_first_norm(token_model):
    arch, model, x = token_model
    assert default_cam_layer(*record_outputs(model, x[:1])) == CASES[arch][0]


@pytest.mark.parametrize(
    "method, peer",
    GRADIENT_CAM_PEERS,
)
def test_gradient_cams_at_token_layers_match_pytorch_grad_cam(token_model, method, peer):
    arch, model, x = token_model
    name, transform = CASES[arch]
    targets = runner_up(model, x)
    layer = dict(model.named_modules())[name]
    with getattr(pytorch_grad_cam, peer)(
        model=model, target_layers=[layer], reshape_transform=transform
    ) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    ours = reportgen.explain(model, x, method, target=targets)  # layer and layout inferred
    assert_correlated(f"{arch} {method}", ours, theirs)


def test_eigencam_at_a_token_layer_is_the_reshaped_activations_projection(token_model):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    arch, model, x = token_model
    name, transform = CASES[arch]
    ours = cam_maps(model, x, [0, 0], [name], ["eigencam"])[("eigencam", name)]
    with torch.no_grad(), Capture(model, [name]) as capture:
        model(x)
    theirs = get_2d_projection(transform(capture.outputs[name]).numpy())
    assert ours.shape == theirs.shape  # the grid: 14 x 14 or 7 x 7
    for a, b in zip(ours.numpy(), theirs, strict=True):
        assert abs(pearson(a, b)) >= 0.99


def test_cam_and_ablation_cam_refuse_a_transformers_token_layer_and_say_why(token_model):
    """A ViT's head reads its class token, not the patches' mean: CAM's class weights do
    not apply; Ablation-CAM writes into channels-first layers only."""
    arch, model, x = token_model
    if arch.startswith("swin"):
        pytest.skip("Swin's head pools the patches: checked on the ViTs")
    with pytest.raises(ValueError, match="CAM needs the layer that feeds global average"):
        reportgen.explain(model, x, "cam")
    with pytest.raises(
        ValueError, match="ablationcam at layer .* channels-first .* Score-CAM or a gradient CAM"
    ):
        reportgen.explain(model, x[:1], "ablationcam")


def test_layouts_are_inferred_from_the_shape_and_the_inputs_aspect_ratio():
    assert infer((2, 64, 7, 7), (224, 224)) == Layout("nchw")
    assert infer((2, 7, 7, 768), (224, 224)) == Layout("nhwc")
    assert infer((2, 7, 14, 96), (112, 224)) == Layout("nhwc")  # wide input, channels last
    assert infer((2, 96, 7, 14), (112, 224)) == Layout("nchw")
    assert infer((2, 197, 192), (224, 224)) == Layout("tokens", 1, (14, 14))
    assert infer((2, 198, 192), (224, 224)) == Layout("tokens", 2, (14, 14))
    assert infer((2, 1 + 7 * 14, 64), (112, 224)) == Layout("tokens", 1, (7, 14))
    assert infer((2, 197, 192), (224, 224), prefix=5) is None  # 192 tokens: no 1:1 grid
    assert infer((2, 1000), (224, 224)) is None
    assert infer((128, 49, 96), (224, 224), batch=2) is None  # Swin's attention: windows
    assert infer((2, 64, 7, 8), (224, 250)) == Layout("nchw")  # 250 / 32 rounds down
    assert infer((2, 197, 192), (224, 250)) == Layout("tokens", 1, (14, 14))
    assert infer((2, 1, 1, 64), (224, 224)) == Layout("nhwc")  # one position: no views


def test_reshape_overrides_the_inferred_layout_or_says_what_is_wrong():
    tokens = torch.arange(2 * 197 * 3, dtype=torch.float32).reshape(2, 197, 3)
    layout = layout_of("blocks.0", (2, 197, 3), (224, 224), "tokens:1")
    assert layout == Layout("tokens", 1, (14, 14))
    as_map = layout.to_map(tokens)
    assert as_map.shape == (2, 3, 14, 14)
    assert torch.equal(as_map[1, 2, 0, 1], tokens[1, 2, 2])  # token 1 + row 0, col 1
    with pytest.raises(ValueError, match="tokens less 3 make no grid"):
        layout_of("blocks.0", (2, 197, 3), (224, 224), "tokens:3")
    with pytest.raises(ValueError, match="tokens less 4 make no grid"):  # P only, never 0
        layout_of("patch_embed", (2, 196, 3), (224, 224), "tokens:4")
    with pytest.raises(ValueError, match="layer 'blocks.0' has output"):
        layout_of("blocks.0", (2, 197, 3), (224, 224), "nhwc")  # not 4-D
    with pytest.raises(ValueError, match="--reshape 'sideways' is unknown"):
        parse("sideways")
    with pytest.raises(ValueError, match="cannot import 'nope' from 'math'"):
        parse("math:nope")
    with pytest.raises(ValueError, match="layer 'fc' has output \\(2, 10\\)"):
        layout_of("fc", (2, 10), (224, 224))


def test_a_users_reshape_function_gives_the_same_maps_as_the_inferred_layout(token_model):
    arch, model, x = token_model
    if not arch.startswith("vit"):
        pytest.skip("one model suffices")
    inferred = reportgen.explain(model, x, "gradcam", target=[1, 2])
    given = reportgen.explain(
        model, x, "gradcam", target=[1, 2], reshape="tests.test_token_models:vit_reshape"
    )
    assert torch.equal(inferred, given)


vit_reshape = vit_tokens(1)  # importable by name, as ``--reshape`` takes it


def test_a_vision_transformer_runs_end_to_end_from_saved_weights(tmp_path):
    """``reportgen run --model timm/NAME --weights FILE`` on a ViT: gradient CAMs and
    Score-CAM at the inferred token layer, the map stored at the token grid; CAM and
    Ablation-CAM named as not computed, with why; the run goes on."""
    import json

    import numpy as np

    from reportgen.cli import main

    torch.manual_seed(0)
    path = tmp_path / "vit.pt"
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(), path)
    out = tmp_path / "run"
    argv = ["run", "--model", "timm/vit_tiny_patch16_224", "--weights", str(path)]
    argv += ["--out", str(out), "--limit", "1", "--metrics", "complexity", "--layout", "nchw"]
    argv += ["--methods", "gradcam,layercam,scorecam,cam,ablationcam"]
    assert main(argv) == 0
    about = json.loads((out / "data" / "run.json").read_text())
    assert about["model"]["cam_layers"] == ["blocks.11.norm1"]
    problems = " ".join(about["problems"])
    assert "CAM needs the layer that feeds global average pooling" in problems
    assert "ablationcam at layer 'blocks.11.norm1'" in problems
    maps = list((out / "data" / "maps").rglob("gradcam@blocks.11.norm1.npz"))
    assert maps, "the Grad-CAM map at the token layer is stored"
    with np.load(maps[0]) as stored:
        assert next(iter(stored.values())).shape[-2:] == (14, 14)  # the patch grid
    assert (out / "methods" / "scorecam.html").is_file()
    bad = argv[:-2] + ["--methods", "gradcam", "--reshape", "tokens:9"]
    assert main(bad) == 2  # 188 tokens make no square grid: a clear option error


def test_a_swin_transformer_builds_a_complete_site_from_saved_weights(tmp_path):
    """The same for Swin, whose blocks keep a channels-last grid ``[N, H, W, C]``: the default
    layer is the last block's first norm, its maps are the 7 x 7 grid, every page is made
    and passes the site check."""
    import json

    import numpy as np

    from reportgen.cli import main

    from .sitecheck import check_site

    torch.manual_seed(0)
    path = tmp_path / "swin.pt"
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    torch.save(model.state_dict(), path)
    out = tmp_path / "run"
    argv = ["run", "--model", "timm/swin_tiny_patch4_window7_224", "--weights", str(path)]
    argv += ["--out", str(out), "--limit", "1", "--metrics", "faithfulness,complexity"]
    argv += ["--methods", "gradcam,gradcampp,saliency", "--layout", "nchw"]
    assert main(argv) == 0
    about = json.loads((out / "data" / "run.json").read_text())
    assert about["model"]["cam_layers"] == ["layers.3.blocks.1.norm1"]
    maps = list((out / "data" / "maps").rglob("gradcam@layers.3.blocks.1.norm1.npz"))
    with np.load(maps[0]) as stored:
        assert next(iter(stored.values())).shape[-2:] == (7, 7)
    assert check_site(out) == []
    assert (out / "methods" / "gradcampp.html").is_file() and (out / "index.html").is_file()
