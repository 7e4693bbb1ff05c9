"""The pieces Occlusion, RISE, Score-CAM and Ablation-CAM share: batched forward passes of
altered inputs, rows per pass, scores, min-max scaling and one clean pass's activations
(split from ``perturbation`` so each technique module holds only its own method)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..capture import Capture, hooks, preserved_state, resolve_layer
from ..layout import layout_in
from ..models import probabilities
from .cam import targets_tensor

Targets = int | Sequence[int] | torch.Tensor
Build = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- shared pieces -------------------------------------------------------------------------


def forward_only(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a technique: eval mode, inference mode, targets as a LongTensor, model restored.

    The result is cloned after leaving inference mode so callers get an ordinary
    float32 tensor they may modify in place.
    """

    @functools.wraps(fn)
    def run(model: nn.Module, x: torch.Tensor, targets: Targets, **kwargs) -> torch.Tensor:
        kwargs["batch_size"] = rows_per_pass(kwargs.get("batch_size"), x, model)
        with preserved_state(model), torch.inference_mode():
            classes = targets_tensor(targets, x.shape[0], x.device)
            maps = fn(model, x, classes, **kwargs).float()
        return maps.clone()

    return run


# Measured on a 2-core CPU with Lite0 at 224 px: 64 rows per pass ran 2-3x slower per row than
# 8 (Occlusion, RISE, Score-CAM, Ablation-CAM alike). On a GPU the rows fill half the free
# memory, up to GPU_MAX_ROWS (beyond a few hundred rows a pass gains nothing).
CPU_ROWS = 8
PROGRESS_ROWS = 256  # perturbed rows from which a call shows an inner progress bar
GPU_MAX_ROWS = 512
MEMORY_SHARE = 0.5  # of the free GPU memory; the rest is the caller's and the allocator's


def rows_for_memory(free_bytes: int, per_row_bytes: int, cap: int = GPU_MAX_ROWS) -> int:
    """Rows that fit ``MEMORY_SHARE`` of ``free_bytes`` at ``per_row_bytes`` each, 1..cap."""
    return max(1, min(cap, int(MEMORY_SHARE * free_bytes) // max(per_row_bytes, 1)))


def probe_row_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Peak memory of one row's inference forward pass beyond what is already held (CUDA)."""
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    base = torch.cuda.memory_allocated(x.device)
    with torch.inference_mode():
        model(x[:1])
    return torch.cuda.max_memory_allocated(x.device) - base


def rows_per_pass(batch_size: int | None, x: torch.Tensor, model: nn.Module | None = None) -> int:
    """Rows per forward pass: the caller's choice, else a default for the input's device:
    ``CPU_ROWS`` on CPU (large batches of perturbed copies are slower per image there:
    activations stop fitting in cache); on a GPU, as many as fit in half its free memory,
    measured with one probe pass."""
    if batch_size is None:
        if x.device.type != "cuda" or model is None:
            return CPU_ROWS
        free, _total = torch.cuda.mem_get_info(x.device)
        return rows_for_memory(free, probe_row_bytes(model, x))
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return int(batch_size)


def pick(logits: torch.Tensor, classes: torch.Tensor, output: str | None) -> torch.Tensor:
    """Each row's score for its own class: the probability under the model's ``output``
    (softmax or sigmoid), or the raw logit (None)."""
    scores = logits.float() if output is None else probabilities(logits, output)
    return scores.gather(1, classes[:, None])[:, 0]


def all_rows(items: int, variants: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``(item, variant)`` pair, item-major: two LongTensors of length items·variants."""
    return (
        torch.arange(items, device=device).repeat_interleave(variants),
        torch.arange(variants, device=device).repeat(items),
    )


def perturbed_scores(
    model: nn.Module,
    items: torch.Tensor,
    variants: torch.Tensor,
    build: Build,
    classes: torch.Tensor,
    *,
    batch_size: int,
    output: str | None,
) -> torch.Tensor:
    """Target score of ``build(items, variants)`` for every row, ``batch_size`` rows per pass.

    ``build`` receives a chunk of item and variant indices and returns the model input
    for those rows; the chunking bounds memory, whatever the number of variants.
    """
    out = torch.empty(len(items), device=classes.device)
    starts = range(0, len(items), batch_size)
    # long units (RISE's masks, Score-CAM's channels) show their own progress and ETA
    for start in tqdm(starts, desc="passes", leave=False, disable=len(items) < PROGRESS_ROWS):
        i, v = items[start : start + batch_size], variants[start : start + batch_size]
        out[start : start + len(i)] = pick(model(build(i, v)), classes[i], output)
    return out


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map (last two dims) to [0, 1]; a constant map becomes all zeros."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, 1), 0.0)


def layer_activations(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    reshape: str | None = None,
    writer: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clean forward pass: the logits and the layer's ``[N, K, h, w]`` output (a token
    or channels-last output read through its layout, ``reshape`` overriding the inferred
    one; ``writer``, the name of a method that writes into the layer: it gets channels-first
    layers only).

    The layer must run exactly once: a module called twice (torchvision's BasicBlock
    reuses one ReLU) would have both outputs replaced by Ablation-CAM.

    ``for_grad=True`` makes the hook hand a clone downstream, so in-place operations
    after the layer (``out += identity`` in ResNet blocks) cannot alter what we keep.
    """
    calls: list[None] = []
    with (
        Capture(model, [layer], for_grad=True) as cap,
        hooks(forward=[(resolve_layer(model, layer), lambda *_: calls.append(None))]),
    ):
        logits = model(x)
    if len(calls) != 1:
        raise ValueError(
            f"layer '{layer}' runs {len(calls)} times in one forward pass; perturbation CAMs "
            "need a module that runs once (a reused module such as a shared ReLU is not one: "
            "pick its parent block)"
        )
    acts = cap.outputs[layer]
    layout = layout_in(model, x, layer, acts, reshape)
    if writer and layout.kind != "nchw":
        raise ValueError(
            f"{writer} at layer '{layer}': its output {tuple(acts.shape)} is "
            f"{layout.describe()}; {writer} zeroes the layer's channels, in channels-first "
            "[N, C, h, w] layers only: at a token layer use Score-CAM or a gradient CAM"
        )
    return logits, layout.to_map(acts)
