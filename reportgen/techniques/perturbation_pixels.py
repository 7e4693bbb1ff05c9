"""Occlusion and RISE: pixel attributions from inputs with pixels hidden, read as softmax
probabilities (their papers' scores); registered in ``perturbation``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .cam import upsample
from .perturbation_passes import all_rows, forward_only, perturbed_scores, pick

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
    output: str = "softmax",
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

    clean = pick(model(x), targets, output=output)  # one clean pass, reused by every window
    items, variants = all_rows(n, len(rows) * len(cols), x.device)
    occluded = perturbed_scores(
        model, items, variants, build, targets, batch_size=batch_size, output=output
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
    centred: bool = False,
    batch_size: int | None = None,
    output: str = "softmax",
    **_,
) -> torch.Tensor:
    """Petsiuk et al. 2018: ``S = Σ_i P_c(x ⊙ M_i) · M_i / (N · p)``, ``[N, H, W]``.

    The same seeded masks serve every image of the call, so maps are reproducible and
    independent of ``batch_size`` and of how images are batched.

    ``centred``: the same expectation, ``E[P | u kept] = E[P] + Cov(P, M(u)) / p``,
    estimated as ``P̄ + Σ_i (P_i − P̄) · M_i / (N · p)``. The paper's sum carries
    ``P̄ · mean_i M_i(u) / p``, whose mean is ``P̄`` but which varies from pixel to pixel
    with the drawn masks' density, the same pattern on every image; centring replaces
    that term by its expectation, so far fewer masks reach a given agreement (measured
    in ``docs/performance.md``).
    """
    n, _, h, w = x.shape
    bank = RiseMasks.draw(masks, cells, p, (h, w), seed, x.device)

    def build(i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x[i] * bank(v)[:, None].to(x.dtype)

    items, variants = all_rows(n, masks, x.device)
    probs = perturbed_scores(
        model, items, variants, build, targets, batch_size=batch_size, output=output
    ).view(n, masks)
    saliency = torch.zeros(n, h * w, device=x.device)
    # the sum in float32 even under a bfloat16 autocast (which covers the passes): a
    # bfloat16 product per chunk would round each chunk's sum, so the map would depend
    # on ``batch_size`` (0.3 % of its range on a small model)
    with torch.autocast(x.device.type, enabled=False):
        probs = probs.float()
        offset = probs.mean(1, keepdim=True) if centred else torch.zeros(n, 1, device=x.device)
        probs = probs - offset
        for start in range(0, masks, batch_size):  # rebuilding a chunk is cheap next to its passes
            v = torch.arange(start, min(start + batch_size, masks), device=x.device)
            saliency += probs[:, v] @ bank(v).view(len(v), -1).float()
    return (saliency / (masks * p) + offset).view(n, h, w)
