"""Forward-only attributions from altered inputs or activations (batched, no gradients).

Four techniques, two shared pieces:

* :func:`perturbed_scores` runs many altered copies of the batch's items through the
  model, ``batch_size`` rows per forward pass, and returns each row's target score.
  Rows are ``(item, variant)`` pairs, so a pass can mix items and no pass is wasted
  at item boundaries;
* :func:`minmax` scales maps to [0, 1] and sends a constant map to 0, so identical
  masked inputs can be recognised and run once.

Occlusion and RISE alter pixels and read softmax probabilities (their papers' scores);
Score-CAM and Ablation-CAM alter the input with, or the inside of, a layer's
activations and read logits, as pytorch-grad-cam and torchcam do. Every ``run`` works
under ``torch.inference_mode()`` with the model in eval mode, restores the model after,
and removes its hooks on exit.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..capture import Capture, preserved_state, resolve_layer
from ..hints import not_a_feature_map
from .cam import targets_tensor, upsample, weighted_sum
from .registry import Technique, register

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


def pick(logits: torch.Tensor, classes: torch.Tensor, probabilities: bool) -> torch.Tensor:
    """Each row's score for its own class: softmax probability or raw logit."""
    logits = logits.float()
    scores = logits.softmax(dim=1) if probabilities else logits
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
    probabilities: bool,
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
        out[start : start + len(i)] = pick(model(build(i, v)), classes[i], probabilities)
    return out


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map (last two dims) to [0, 1]; a constant map becomes all zeros."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, 1), 0.0)


def layer_activations(
    model: nn.Module, x: torch.Tensor, layer: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clean forward pass: the logits and the layer's ``[N, K, h, w]`` output.

    The layer must run exactly once: a module called twice (torchvision's BasicBlock
    reuses one ReLU) would have both outputs replaced by Ablation-CAM.

    ``for_grad=True`` makes the hook hand a clone downstream, so in-place operations
    after the layer (``out += identity`` in ResNet blocks) cannot alter what we keep.
    """
    calls: list[None] = []
    with (
        Capture(model, [layer], for_grad=True) as cap,
        hooked(resolve_layer(model, layer), lambda *_: calls.append(None)),
    ):
        logits = model(x)
    if len(calls) != 1:
        raise ValueError(
            f"layer '{layer}' runs {len(calls)} times in one forward pass; perturbation CAMs "
            "need a module that runs once (a reused module such as a shared ReLU is not one: "
            "pick its parent block)"
        )
    acts = cap.outputs[layer]
    if acts.dim() != 4:
        raise ValueError(not_a_feature_map(layer, tuple(acts.shape)))
    return logits, acts


@contextmanager
def hooked(module: nn.Module, hook: Callable) -> Iterator[None]:
    """A forward hook on ``module`` for the block; always removed on exit."""
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# --- occlusion -----------------------------------------------------------------------------


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Top-left positions along one axis; the last window sits flush with the far edge."""
    if not 1 <= window <= size:
        raise ValueError(f"occlusion window {window} px does not fit an image side of {size} px")
    if stride < 1:
        raise ValueError(f"occlusion stride must be at least 1 px, got {stride}")
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def spans(starts: Sequence[int], window: int, size: int, device: torch.device) -> torch.Tensor:
    """``[P, size]`` bool: which pixels of one axis each window position covers."""
    pos = torch.arange(size, device=device)
    s = torch.as_tensor(starts, device=device)[:, None]
    return (pos >= s) & (pos < s + window)


def fill_value(fill: float | Sequence[float] | torch.Tensor | None, x: torch.Tensor):
    """The occluder as a ``[C, 1, 1]`` tensor: one value, or one per channel."""
    value = torch.as_tensor(0.0 if fill is None else fill, dtype=x.dtype, device=x.device)
    if value.numel() not in (1, x.shape[1]):
        raise ValueError(f"fill needs 1 or {x.shape[1]} values, got {value.numel()}")
    return value.reshape(-1, 1, 1)


@forward_only
def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    window: int = 32,
    stride: int = 16,
    fill: float | Sequence[float] | torch.Tensor | None = None,
    batch_size: int | None = None,
    **_,
) -> torch.Tensor:
    """Zeiler & Fergus 2014: mean drop in target probability over the windows covering a pixel.

    ``[N, H, W]`` at input resolution. The windows are separable (rows × columns), so
    the occluded inputs and the per-pixel mean are built from ``[P, H]`` and ``[P, W]``
    indicators, never from a ``[P, H, W]`` stack.
    """
    n, _, h, w = x.shape
    rows = spans(window_starts(h, window, stride), window, h, x.device)
    cols = spans(window_starts(w, window, stride), window, w, x.device)
    patch = fill_value(fill, x)

    def build(i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        box = rows[v // len(cols)][:, :, None] & cols[v % len(cols)][:, None, :]
        return torch.where(box[:, None], patch, x[i])

    clean = pick(model(x), targets, probabilities=True)  # one clean pass, reused by every window
    items, variants = all_rows(n, len(rows) * len(cols), x.device)
    occluded = perturbed_scores(
        model, items, variants, build, targets, batch_size=batch_size, probabilities=True
    )
    drop = clean[:, None, None] - occluded.view(n, len(rows), len(cols))
    r, c = rows.float(), cols.float()
    total = torch.einsum("nab,ah,bw->nhw", drop, r, c)
    covered = torch.einsum("ah,bw->hw", r, c)  # >= 1 everywhere: the windows reach every edge
    return total / covered


# --- RISE ----------------------------------------------------------------------------------


@dataclass
class RiseMasks:
    """Petsiuk et al. 2018's masks, drawn once from a seeded generator, built on demand.

    A ``cells × cells`` grid of Bernoulli(p) cells is up-sampled bilinearly to
    ``(cells + 1) · ceil(H / cells)`` pixels and cropped to ``H × W`` at a random shift
    of up to one cell. Grids and shifts are drawn up front (a few hundred kB for 4000
    masks) so mask ``i`` is the same whatever the chunking; the ``[H, W]`` masks
    themselves exist only a chunk at a time.
    """

    grids: torch.Tensor  # [M, cells, cells] in {0, 1}
    shifts: torch.Tensor  # [M, 2]: crop offsets (y, x), each below one cell
    size: tuple[int, int]
    up: tuple[int, int]

    @classmethod
    def draw(
        cls, count: int, cells: int, p: float, size: tuple[int, int], seed: int, device
    ) -> RiseMasks:
        if count < 1 or cells < 1 or not 0 < p <= 1:
            raise ValueError(
                f"RISE needs masks >= 1, cells >= 1, 0 < p <= 1; got {count}, {cells}, {p}"
            )
        gen = torch.Generator().manual_seed(seed)
        cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
        grids = (torch.rand(count, cells, cells, generator=gen) < p).float()
        shifts = torch.stack([torch.randint(0, c, (count,), generator=gen) for c in cell], dim=1)
        up = ((cells + 1) * cell[0], (cells + 1) * cell[1])
        return cls(grids.to(device), shifts.to(device), size, up)

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        """Masks ``index`` as ``[B, H, W]`` floats in [0, 1]."""
        big = upsample(self.grids[index], self.up)
        ys = self.shifts[index, 0, None] + torch.arange(self.size[0], device=big.device)
        xs = self.shifts[index, 1, None] + torch.arange(self.size[1], device=big.device)
        b = torch.arange(len(index), device=big.device)[:, None, None]
        return big[b, ys[:, :, None], xs[:, None, :]]


@forward_only
def rise(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    masks: int = 4000,
    cells: int = 7,
    p: float = 0.5,
    seed: int = 0,
    batch_size: int | None = None,
    **_,
) -> torch.Tensor:
    """Petsiuk et al. 2018: ``S = Σ_i P_c(x ⊙ M_i) · M_i / (N · p)``, ``[N, H, W]``.

    The same seeded masks serve every image of the call, so maps are reproducible and
    independent of ``batch_size`` and of how images are batched.
    """
    n, _, h, w = x.shape
    bank = RiseMasks.draw(masks, cells, p, (h, w), seed, x.device)

    def build(i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x[i] * bank(v)[:, None].to(x.dtype)

    items, variants = all_rows(n, masks, x.device)
    probs = perturbed_scores(
        model, items, variants, build, targets, batch_size=batch_size, probabilities=True
    ).view(n, masks)
    saliency = torch.zeros(n, h * w, device=x.device)
    for start in range(0, masks, batch_size):  # rebuilding a chunk is cheap next to its passes
        v = torch.arange(start, min(start + batch_size, masks), device=x.device)
        saliency += probs[:, v] @ bank(v).view(len(v), -1)
    return saliency.view(n, h, w) / (masks * p)


# --- Score-CAM -----------------------------------------------------------------------------


@forward_only
def scorecam(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    layer: str,
    classifier: str | None = None,
    batch_size: int | None = None,
    align_corners: bool = False,
    channels: int | None = None,
    **_,
) -> torch.Tensor:
    """Wang et al. 2020: ``relu(Σ_k softmax_k(y_c(x ⊙ s(U(A_k)))) A_k)`` at the layer's size.

    ``channels=K`` weighs only each image's K channels of largest spatial variance (the
    others get weight 0: left out of the softmax), as "Faster Score-CAM" does; ``None``
    (the paper) weighs every channel.

    A channel that is constant over the map normalises to an all-zero mask, so its masked
    input is all zeros, the same for every such channel of every image: it runs once.
    Masks are normalised at the layer's size, then up-sampled a chunk at a time;
    ``align_corners=True`` up-samples first, as pytorch-grad-cam does.
    """
    _, acts = layer_activations(model, x, layer)
    n, k = acts.shape[:2]
    masks = minmax(acts)
    live = masks.flatten(2).amax(dim=2) > 0  # [N, K]: channels that are not constant
    if channels is not None and channels < k:
        spread = acts.flatten(2).float().var(dim=2).masked_fill(~live, -1.0)
        kept = torch.zeros_like(live).scatter_(1, spread.topk(channels, dim=1).indices, True)
        live, dropped = live & kept, ~kept  # dropped channels leave the softmax
    else:
        dropped = torch.zeros_like(live)

    def build(i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if align_corners:
            mask = minmax(upsample(acts[i, v], x.shape[-2:], align_corners=True))
        else:
            mask = upsample(masks[i, v], x.shape[-2:])
        return x[i] * mask[:, None].to(x.dtype)

    items, units = live.nonzero(as_tuple=True)
    logits = torch.empty(n, k, device=x.device)
    logits[items, units] = perturbed_scores(
        model, items, units, build, targets, batch_size=batch_size, probabilities=False
    )
    if not (live | dropped).all():
        blank = model(torch.zeros_like(x[:1])).expand(n, -1)
        logits = torch.where(live, logits, pick(blank, targets, probabilities=False)[:, None])
    logits = logits.masked_fill(dropped, -math.inf)
    return torch.relu(weighted_sum(logits.softmax(dim=1), acts))


# --- Ablation-CAM --------------------------------------------------------------------------


def same_logits(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal up to float32 rounding (summation order, batch size), relative to the largest
    logit: the test that a shortcut reproduces what the whole network computes."""
    scale = want.float().abs().max().item()
    return got.shape == want.shape and torch.allclose(
        got.float(), want.float(), rtol=1e-4, atol=1e-5 + 1e-4 * scale
    )


def head_drops(
    model: nn.Module,
    classifier: str | None,
    logits: torch.Tensor,
    acts: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor | None:
    """``y_c − y_c^k`` for every channel in closed form, or None where it does not apply.

    Where the layer feeds global average pooling and the linear ``classifier`` (dropout
    is off in eval mode), zeroing ``A_k`` lowers logit ``c`` by exactly
    ``W[c, k] · mean_ij(A_k)``: no pass at all. That the head is this one is checked,
    not assumed: the clean logits must equal ``classifier(mean_ij(A))``.
    """
    if classifier is None:
        return None
    linear = resolve_layer(model, classifier)
    if not isinstance(linear, nn.Linear) or linear.in_features != acts.shape[1]:
        return None
    pooled = acts.mean(dim=(2, 3))
    if not same_logits(linear(pooled), logits):
        return None
    return linear.weight[targets].float() * pooled.float()


def prefix_modules(model: nn.Module, layer: str) -> list[nn.Module]:
    """The children of the layer's ancestors, ancestors and layer left out: the modules
    that may run whole before the layer (``conv_stem``, ``bn1``, ``blocks.0`` … ``blocks.4``
    for Lite0's ``blocks.5``)."""
    modules = dict(model.named_modules())
    parts = layer.split(".")
    ancestors = [".".join(parts[:i]) for i in range(len(parts))]  # "", "blocks"
    found = {
        child: None
        for parent in ancestors
        for name, child in modules[parent].named_children()
        if (f"{parent}.{name}" if parent else name) not in [*ancestors, layer]
    }
    return list(found)


@dataclass
class Replay:
    """Passes through the network after a layer only, from one clean pass's outputs.

    Recorded during the clean pass: a copy of the output of every prefix module (see
    :func:`prefix_modules`) that runs exactly once, finishes before the layer starts and
    returns a batch-first tensor. While :meth:`patched`, those modules' forwards return
    their stored outputs for the rows' items and the layer's forward returns ``output``,
    so a pass computes what runs after the layer only. The model's own code still runs
    around them, so skip connections from before the layer (``out += identity`` in the
    layer's block) get their clean values with no analysis of the model's code.

    An output no longer referenced when the layer starts (``conv_stem``'s, once ``bn1``
    has read it) can only reach the rest of the network through values computed from it;
    :meth:`trimmed` returns an empty tensor there instead of copying rows of it.
    """

    layer: nn.Module
    stored: dict[nn.Module, torch.Tensor | None]  # None: return an empty tensor
    alive: set[nn.Module] = field(default_factory=set)  # outputs referenced at the layer
    items: torch.Tensor | None = None  # [B]: each row's item, for the stored outputs
    output: torch.Tensor | None = None  # [B, K, h, w]: what the layer returns

    @classmethod
    @contextmanager
    def record(cls, model: nn.Module, layer: str, n: int) -> Iterator[Replay]:
        """Hooks for the clean pass of a batch of ``n`` run inside the block."""
        replay = cls(resolve_layer(model, layer), {})
        calls: dict[nn.Module, int] = {}
        outputs: dict[nn.Module, weakref.ref] = {}  # the originals, to see which live on
        started = False

        def start(*_) -> None:
            nonlocal started
            started = True
            replay.alive = {m for m, ref in outputs.items() if ref() is not None}

        def done(module: nn.Module, _inp, out) -> None:
            calls[module] = calls.get(module, 0) + 1
            if not started and isinstance(out, torch.Tensor) and out.dim() and len(out) == n:
                replay.stored[module] = out.clone()  # later in-place ops must not reach it
                outputs[module] = weakref.ref(out)

        handles = [replay.layer.register_forward_pre_hook(start)]
        handles += [m.register_forward_hook(done) for m in prefix_modules(model, layer)]
        try:
            yield replay
        finally:
            for h in handles:
                h.remove()
            for module in [m for m in replay.stored if calls[m] != 1]:
                del replay.stored[module]  # also runs after the layer: it must run for real

    def trimmed(self) -> dict[nn.Module, torch.Tensor | None]:
        """The stored outputs, those no longer referenced at the layer left out."""
        return {m: out if m in self.alive else None for m, out in self.stored.items()}

    @contextmanager
    def patched(self) -> Iterator[None]:
        """The stored modules and the layer return their prepared outputs for the block."""

        def stored_rows(out: torch.Tensor | None) -> Callable[..., torch.Tensor]:
            if out is None:
                return lambda *_, **__: self.output.new_empty(0)
            return lambda *_, **__: out[self.items]  # a copy: the tail may write into it

        forwards = {m: stored_rows(out) for m, out in self.stored.items()}
        forwards[self.layer] = lambda *_, **__: self.output
        own: dict[nn.Module, Callable | None] = {}  # an instance's own forward, if it had one
        try:
            for module, forward in forwards.items():
                own[module] = module.__dict__.get("forward")
                module.forward = forward
            yield
        finally:
            for module, forward in own.items():
                if forward is None:
                    del module.forward
                else:
                    module.forward = forward

    def reproduces(
        self,
        model: nn.Module,
        x: torch.Tensor,
        logits: torch.Tensor,
        acts: torch.Tensor,
        batch_size: int,
    ) -> bool:
        """Whether replayed passes give the clean logits, on 2N rows in reverse order: a
        module whose skipped forward had side effects read later (state kept on itself),
        or a value computed from a left-out output, shows up as wrong values or an error."""
        rows = torch.arange(len(x) - 1, -1, -1, device=x.device).repeat(2)
        try:
            with self.patched():
                for chunk in rows.split(batch_size):
                    self.items, self.output = chunk, acts[chunk]
                    if not same_logits(model(x[chunk]), logits[chunk]):
                        return False
            return True
        except Exception:  # noqa: BLE001 - any failure means: replay less
            return False

    def settle(
        self,
        model: nn.Module,
        x: torch.Tensor,
        logits: torch.Tensor,
        acts: torch.Tensor,
        batch_size: int,
    ) -> None:
        """Keep the cheapest replay that reproduces the clean logits: the trimmed one, all
        stored outputs, or none (the whole network runs, the layer's output replaced)."""
        full, trimmed = self.stored, self.trimmed()
        for stored in [trimmed, full] if any(v is None for v in trimmed.values()) else [full]:
            self.stored = stored
            if stored and self.reproduces(model, x, logits, acts, batch_size):
                return
        self.stored = {}


def tail_drops(
    model: nn.Module,
    x: torch.Tensor,
    replay: Replay,
    logits: torch.Tensor,
    acts: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """``y_c − y_c^k`` for every channel, one row per channel that zeroing changes.

    Rows run through the network after the layer only (:class:`Replay`), or through the
    whole network where no replay reproduces the clean logits. A channel that is already
    all zero ablates to the clean network: its drop is exactly 0 and it is not run.
    """
    replay.settle(model, x, logits, acts, batch_size)
    n, k = acts.shape[:2]
    live = acts.flatten(2).ne(0).any(dim=2)  # [N, K]: channels that zeroing changes
    items, channels = live.nonzero(as_tuple=True)

    def build(i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = acts[i]  # a copy (advanced indexing)
        out[torch.arange(len(i), device=out.device), v] = 0
        replay.items, replay.output = i, out
        return x[i]

    clean = pick(logits, targets, probabilities=False)
    drops = torch.zeros(n, k, device=clean.device)
    with replay.patched():
        ablated = perturbed_scores(
            model, items, channels, build, targets, batch_size=batch_size, probabilities=False
        )
    drops[items, channels] = clean[items] - ablated
    return drops


def ablation_weights(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    layer: str,
    classifier: str | None,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ablation-CAM's ``w [N, K]`` and the layer's ``A [N, K, h, w]`` (call it as
    :func:`ablationcam` does: eval mode, inference mode, targets a LongTensor).

    Only the network after the layer changes when a channel is zeroed, so only it is run:
    not at all where the layer feeds global average pooling and the linear
    ``classifier`` (:func:`head_drops`), else one row per channel through the rest of
    the network (:func:`tail_drops`).
    """
    with Replay.record(model, layer, x.shape[0]) as replay:
        logits, acts = layer_activations(model, x, layer)
    drops = head_drops(model, classifier, logits, acts, targets)
    if drops is None:
        drops = tail_drops(model, x, replay, logits, acts, targets, batch_size)
    clean = pick(logits, targets, probabilities=False)
    return drops / clean[:, None], acts


@forward_only
def ablationcam(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    layer: str,
    classifier: str | None = None,
    batch_size: int | None = None,
    **_,
) -> torch.Tensor:
    """Desai & Ramaswamy 2020: ``w_k = (y_c − y_c^k) / y_c``, map ``relu(Σ_k w_k A_k)``,
    where ``y_c^k`` is the target logit with channel ``k`` of the layer zeroed
    (:func:`ablation_weights`)."""
    weights, acts = ablation_weights(model, x, targets, layer, classifier, batch_size)
    return torch.relu(weighted_sum(weights, acts))


# --- registry ------------------------------------------------------------------------------

register(
    Technique(
        name="occlusion",
        title="Occlusion",
        family="perturbation",
        paper="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
        url="https://arxiv.org/abs/1311.2901",
        summary="Slide a square patch (window 32 px, stride 16 px) over the image and record "
        "the target's softmax probability each time. M(u) = mean over the windows W ∋ u of "
        "(P_c(x) − P_c(x with W filled)): how much hiding a pixel's neighbourhood costs.",
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
        presets={"fast": {"masks": 1000}},
        why="Fast preset: 1000 masks, a quarter of the paper's cost, chosen for time, not "
        "for agreement: RISE maps are noisy. Measured against 4000 masks (same seed): "
        "chelsea r = 0.56 / 0.64 / 0.59 at 250 / 500 / 1000 masks, coffee r = 0.84 / 0.92 "
        "at 250 / 500; on a photo whose class probability barely moves under masking, even "
        "4000-mask maps differ from seed to seed. Publish RISE figures from "
        "--quality paper.",
        needs_gradient=False,
        bf16=True,
        notes="Masks multiply the model's (normalised) input, so a hidden pixel becomes 0 "
        "there, the data set's mean colour, as in the authors' code. Masks come from a "
        "seeded generator (seed=0) and are shared by every image, so maps are reproducible. "
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
        "channels are all zero), 192 at blocks.5",
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
        "(at most 192 at Lite0's blocks.5, each running blocks.6 and the head), + 2 rows per "
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
    )
)
