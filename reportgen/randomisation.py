"""Model randomisation (Adebayo et al. 2018): the weights re-initialised block by block
from the logits down (cascading) or one block at a time (independent), the maps
recomputed at each step and compared with the trained model's (``evaluation.sanity``
holds the definitions and the statistics)."""

from __future__ import annotations

import copy
import functools
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from evaluation.sanity import TRAINED, Maps, similarities

from .capture import hooks, preserved_state, resolve_layer

Explain = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


# --- Which blocks, in which order ----------------------------------------------------------


def _owners_in_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules owning parameters, in the order of their first call; modules
    that never run do not affect the output and are left out (so is the root's own)."""
    order: list[str] = []
    owners = [
        (module, lambda *_, name=name: order.append(name))
        for name, module in model.named_modules()
        if name and next(module.parameters(recurse=False), None) is not None
    ]
    with hooks(pre=owners), preserved_state(model), torch.no_grad():
        model(x[:1])
    return list(dict.fromkeys(order))


def _block_of(modules: dict[str, nn.Module], name: str) -> str:
    """The element of a sequence container that holds ``name`` (``layer4.1.conv2`` ->
    ``layer4.1``); a stage that is a sequence of blocks is entered (``blocks.5.3.conv_pw``
    -> ``blocks.5.3``, not ``blocks.5``). Without an index: the first two components."""
    parts = name.split(".")
    index = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    if index is None:
        return ".".join(parts[:2])
    end = index + 1
    while end < len(parts) and parts[end].isdigit():
        inner = modules[".".join(parts[: end + 1])]
        if not isinstance(modules[".".join(parts[:end])], (nn.Sequential, nn.ModuleList)):
            break
        if next(inner.children(), None) is None:  # a leaf: the stage is not one of blocks
            break
        end += 1
    return ".".join(parts[:end])


def randomisation_steps(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The blocks to re-initialise, from the output back to the input (one forward pass on
    ``x[:1]``). A step of several adjacent top-level modules is written ``a+b``."""
    modules = dict(model.named_modules())
    blocks = list(dict.fromkeys(_block_of(modules, n) for n in _owners_in_order(model, x)))
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no parameters to randomise")
    output, rest = blocks[-1], blocks[:-1]
    steps: list[list[str]] = []
    for block in rest:
        if steps and _top_level(block) and _top_level(steps[-1][-1]):
            steps[-1].append(block)  # stem conv + its norm: one layer, one step
        else:
            steps.append([block])
    return [output, *("+".join(s) for s in reversed(steps))]


def _top_level(block: str) -> bool:
    """A module owning parameters directly under the root (``conv1``, ``bn1``)."""
    return "." not in block and not block.isdigit()


# --- Re-initialisation ---------------------------------------------------------------------


def _redraw(param: nn.Parameter) -> None:
    """For a module without ``reset_parameters``: >= 2-D like torch's Linear default,
    otherwise from a normal with the trained tensor's own mean and std."""
    if param.dim() >= 2:
        nn.init.kaiming_uniform_(param, a=5**0.5)
    elif param.numel() > 1:
        nn.init.normal_(param, param.mean().item(), param.std().item())


@torch.no_grad()
def _reinitialise(model: nn.Module, step: str, seed: int) -> None:
    """Reset every module of ``step`` in place, seeded by the seed and each block's name so
    a block's random weights do not depend on which other blocks are randomised."""
    for name in step.split("+"):
        with torch.random.fork_rng():
            torch.manual_seed(zlib.crc32(f"{seed}:{name}".encode()))
            for module in resolve_layer(model, name).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                else:
                    for param in module.parameters(recurse=False):
                        _redraw(param)


def randomised(model: nn.Module, blocks: Sequence[str], seed: int) -> nn.Module:
    """A deep copy of ``model`` in eval mode with ``blocks`` re-initialised; the original
    is not touched."""
    copied = copy.deepcopy(model).eval()
    for block in blocks:
        _reinitialise(copied, block, seed)
    return copied


# --- The cascade ---------------------------------------------------------------------------


def _as_arrays(maps: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().double().cpu().numpy() for k, v in maps.items()}


def _rows(step: int, block: str, maps: dict[str, np.ndarray], trained: dict[str, Maps]) -> list:
    """One row per (method, image): its map at this step against the trained model's."""
    rows = []
    for method, stack in maps.items():
        if method not in trained:  # it failed on the trained model: nothing to compare
            continue
        rho, ss = similarities(stack, trained[method])
        rows += [
            {
                "step": step,
                "block": block,
                "method": method,
                "image": image,
                "spearman": float(rho[image]),
                "ssim": float(ss[image]),
            }
            for image in range(len(stack))
        ]
    return rows


def model_randomisation(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    explain: Explain,
    seed: int = 0,
    steps: Sequence[str] | None = None,
    progress: bool = False,
    independent: bool = False,
    trained: dict[str, torch.Tensor] | None = None,
    every: int = 1,
) -> list[dict]:
    """Rows ``{step, block, method, image, spearman, ssim}``: every map at each step compared
    with the trained model's map (step 0, block ``"none"``). ``explain`` is called once per
    step, in order, always on a copy of the model.

    Cascading (the default): the blocks re-initialised cumulatively from the output down.
    ``independent`` (Adebayo et al. 2018's other variant): at step k only block k is
    re-initialised (with the weights the cascade gives it), every other block keeps its
    trained weights; it asks whether a map depends on each block by itself, where the
    cascade cannot tell a block that matters from one whose effect the blocks after it
    already destroyed.

    ``trained``: the trained model's maps (step 0) when the caller already has them (every
    variant starts from the same maps, and a run has stored those of its costly methods);
    ``explain`` is then not called for step 0.

    ``every``: explain at every ``every``-th step only (the first and last always). The
    blocks are still re-initialised one by one, so the rows of a step explained are the
    same as those of the full cascade: the curve has fewer points, none of them changes."""
    steps = randomisation_steps(model, x) if steps is None else list(steps)
    work = copy.deepcopy(model).eval()
    start = _as_arrays(explain(work, x, targets) if trained is None else trained)
    prepared = {method: Maps(stack) for method, stack in start.items()}
    rows = _rows(0, TRAINED, start, prepared)
    label = "independent" if independent else "sanity"
    explained = explained_steps(len(steps), every)
    for step, block in enumerate(tqdm(steps, desc=label, disable=not progress), 1):
        if not independent:  # the cascade randomises every block, explained or not
            _reinitialise(work, block, seed)
        if step not in explained:
            continue
        now = randomised(model, [block], seed) if independent else work.eval()
        rows += _rows(step, block, _as_arrays(explain(now, x, targets)), prepared)
    return rows


def explained_steps(count: int, every: int) -> set[int]:
    """Steps 1..``count`` explained when only every ``every``-th is: 1, 1 + every, ...,
    and the last (every block randomised)."""
    return {*range(1, count + 1, max(1, every)), count} if count else set()


cascading_randomisation = model_randomisation
independent_randomisation = functools.partial(model_randomisation, independent=True)


def random_logit(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    explain: Explain,
    seed: int = 0,
    target_maps: dict[str, torch.Tensor] | None = None,
) -> list[dict]:
    """Sixt et al. 2020's random-logit test: each image explained for a class drawn at
    random among the others (seeded), compared with its map for the target. Rows
    ``{method, image, other, spearman, ssim}``; a map that stays the same whatever the
    class (high similarity) does not explain the class. Nothing is randomised, so
    ``explain`` runs on the model itself (which it leaves as it found it); ``target_maps``
    are the maps for ``targets`` when the caller already has them (the cascade's step 0)."""
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, classes - 1, len(targets))
    others = torch.as_tensor(drawn + (drawn >= targets.cpu().numpy()), device=targets.device)
    target_maps = _as_arrays(explain(model, x, targets) if target_maps is None else target_maps)
    other_maps = _as_arrays(explain(model, x, others))
    rows = []
    for method, stack in target_maps.items():
        if method not in other_maps:  # it failed for the other class
            continue
        rho, ss = similarities(other_maps[method], stack)
        for image in range(len(stack)):
            rows.append(
                {
                    "method": method,
                    "image": image,
                    "other": int(others[image]),
                    "spearman": float(rho[image]),
                    "ssim": float(ss[image]),
                }
            )
    return rows
