"""The small CNN of ``--data synthetic`` (``SmallCNN``), its training and its committed weights:
beside the other models, so ``models.py`` imports no data module; the images are drawn by
``reportgen/sources/synthetic.py``. ``python -m reportgen.synthetic_model --out FILE`` retrains."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .sources.synthetic import CLASSES, EVAL_IMAGES, EVAL_SEED, SIZE, sample

TRAIN_SEED_OFFSET = 1000  # training seeds are 1000 + seed, never EVAL_SEED
WEIGHTS = "synthetic_cnn.pt"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
TRAIN_IMAGES = 4000  # defaults of train() and of the CLI: the recipe of the committed weights
TRAIN_EPOCHS = 12
BATCH = 32
LEARNING_RATE = 3e-3
CAM_LAYER = "features.3"
FEATURE_LAYERS = ("features.0", "features.1", "features.2", "features.3")
INPUT_SIZE = (SIZE, SIZE)  # the model takes the images as drawn


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _block(cin: int, cout: int, pool: bool = False, stride: int = 1) -> nn.Sequential:
    """Two conv3x3-BN-ReLU, optionally after a 2x2 max-pool."""
    layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
    return nn.Sequential(*layers, *_conv(cin, cout, stride), *_conv(cout, cout))


class SmallCNN(nn.Module):
    """Four conv blocks, global average pooling, one linear layer: the plain CAM architecture,
    so every CAM variant applies to ``features.3`` (64 x 14 x 14, after its ReLU) directly.

    The first conv has stride 2 (112 -> 56 px) and max-pools open blocks 1 and 2 (-> 28 ->
    14 px): a full-resolution first block made CPU training ten times slower. Blocks hold two
    convs because with one the net learnt shapes far more slowly (68 % after 20 epochs on
    3,000 images). Receptive field of ``features.3``: 93 px, twice the largest object."""

    def __init__(self, channels: tuple[int, int, int, int] = (16, 32, 64, 64)):
        super().__init__()
        c0, c1, c2, c3 = channels
        self.features = nn.Sequential(
            _block(3, c0, stride=2),
            _block(c0, c1, pool=True),
            _block(c1, c2, pool=True),
            _block(c2, c3),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c3, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [N, SIZE, SIZE, 3] images -> the normalised float batch the model takes."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _images(seed: int, count: int, progress: bool, what: str) -> tuple[np.ndarray, np.ndarray]:
    samples = (sample(seed, i) for i in range(count))
    samples = tqdm(samples, total=count, desc=what, disable=not progress, leave=False)
    rgb, labels = zip(*((s.rgb, s.label) for s in samples), strict=True)
    return np.stack(rgb), np.array(labels)


@torch.no_grad()
def accuracy(model: nn.Module, images: int = EVAL_IMAGES, progress: bool = False) -> float:
    """Top-1 accuracy on the evaluation set ``sample(EVAL_SEED, i)``, i < images."""
    rgb, labels = _images(EVAL_SEED, images, progress, "eval images")
    model.eval()
    logits = torch.cat([model(to_input(rgb[i : i + 64])) for i in range(0, len(rgb), 64)])
    return float((logits.argmax(1).numpy() == labels).mean())


def _turned(x: torch.Tensor, order: torch.Generator) -> torch.Tensor:
    """A random rotation by quarter turns and flip of the whole batch: every class, and the
    clutter, look the same turned, so this gives eight views of each image for free."""
    x = torch.rot90(x, int(torch.randint(4, (1,), generator=order)), dims=(2, 3))
    return x.flip(3) if bool(torch.randint(2, (1,), generator=order)) else x


@contextmanager
def _reproducible(seed: int) -> Iterator[None]:
    """Seeded, deterministic kernels on one thread, so sums run in one order whatever the core
    count (and two threads beside another busy process ran over ten times slower); the global
    random state and settings are restored afterwards."""
    saved = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = False  # cost 10 %, no use here
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(saved[0])
            torch.set_num_threads(saved[1])
            torch.utils.deterministic.fill_uninitialized_memory = fill


def train(
    seed: int = 0, images: int = TRAIN_IMAGES, epochs: int = TRAIN_EPOCHS, progress: bool = True
) -> tuple[SmallCNN, float]:
    """Train SmallCNN on ``sample(1000 + seed, i)``, i < images; the same seed gives the same
    weights on the same machine (deterministic kernels, seeded init, data order and turns).
    Returns the model in eval mode and its held-out accuracy on the evaluation set."""
    rgb, labels = _images(TRAIN_SEED_OFFSET + seed, images, progress, "train images")
    steps = epochs * -(-images // BATCH)
    bar = tqdm(total=steps, desc="training", disable=not progress, leave=False)
    with _reproducible(seed):
        model = SmallCNN().to(memory_format=torch.channels_last)  # 20 % faster on CPU
        optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=LEARNING_RATE, total_steps=steps, pct_start=0.2
        )
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(images, generator=order).split(BATCH):
                x = _turned(to_input(rgb[idx.numpy()]), order)
                x = x.contiguous(memory_format=torch.channels_last)
                loss = nn.functional.cross_entropy(model(x), torch.from_numpy(labels[idx.numpy()]))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, accuracy(model, progress=progress)


def default_weights() -> Path:
    """The committed weights file, inside the package data folder ``datasets/``."""
    return Path(str(resources.files("reportgen.datasets").joinpath(WEIGHTS)))


def load_model(weights: str | Path | None = None) -> SmallCNN:
    """SmallCNN in eval mode with the committed weights, or those in the file ``weights``."""
    model = SmallCNN()
    path = default_weights() if weights is None else Path(weights)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    """Retrain the committed weights: ``python -m reportgen.synthetic_model --out FILE``."""
    parser = argparse.ArgumentParser(
        prog="python -m reportgen.synthetic_model", description=__doc__
    )
    parser.add_argument("--out", type=Path, required=True, help="where to save the state dict")
    parser.add_argument("--seed", type=int, default=0, help="training seed (data, init, order)")
    parser.add_argument("--images", type=int, default=TRAIN_IMAGES, help="training images")
    parser.add_argument("--epochs", type=int, default=TRAIN_EPOCHS, help="passes over them")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model, held_out = train(args.seed, args.images, args.epochs)
    seconds = time.perf_counter() - start
    state = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    print(
        f"held-out accuracy {held_out:.1%} on {EVAL_IMAGES} images (seed {EVAL_SEED}), "
        f"trained in {seconds:.0f} s (one thread); saved {args.out} "
        f"({args.out.stat().st_size / 1024:.0f} KiB)"
    )


if __name__ == "__main__":
    main()
