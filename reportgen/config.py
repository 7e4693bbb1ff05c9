"""Run settings in one place; hashed so a later resume can check them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

SYNTHETIC_MODEL = "synthetic_cnn"  # the model ``--data synthetic`` defaults to (models.REGISTRY)


@dataclass
class RunConfig:
    """Everything ``reportgen run`` was asked to do."""

    model: str = "efficientnet_lite0"
    weights: str | None = None
    data: str | None = None  # None: the embedded photos
    methods: str = "all"
    layers: str = "auto"
    out: str = "site"
    device: str = "auto"
    batch_size: int = 8
    limit: int | None = None
    seed: int = 0
    target: str = "predicted"  # "predicted", "label" (the image's first class) or a class id
    options: dict[str, dict[str, object]] = field(default_factory=dict)  # from --set
    loc_deltas: tuple[float, ...] = field(default=(0.0, 0.25, 0.5))
    metrics: str = "default"  # metric groups: default, all, or a list (see options.METRIC_GROUPS)
    classes: str = ""  # class ids class_model draws besides the predicted ones, "1,2"
    quality: str = "fast"  # settings preset: fast (default run) or paper (published settings)
    precision: str = "fp32"  # techniques under autocast: fp32 (off), bf16, fp16 (GPU only)
    layout: str = "auto"  # memory layout: nchw, nhwc, or auto (the start-up probe's fastest)
    curve_steps: int | None = None  # insertion / deletion steps; None: the --quality preset's
    # the model's input (H, W) and normalisation; None: its spec's (or timm's configuration)
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    reshape: str = "auto"  # how CAM layers' outputs read as [N, C, h, w] (reportgen.layout)
    output: str = "auto"  # the model's probabilities: softmax, sigmoid, auto (its spec's)
    resume: bool = False  # continue the run in ``out``; not a setting of the results
    shard: tuple[int, int] = (0, 1)  # (index, count): this process's share of the batches
    profile: bool = False  # kernel tables per technique (first batch); slows that batch

    LOCAL = ("out", "resume", "shard", "profile")  # where and how, not what: not hashed

    def results_settings(self) -> dict:
        """The settings that change results, JSON-ready."""
        settings = {k: v for k, v in asdict(self).items() if k not in self.LOCAL}
        return json.loads(json.dumps(settings))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: dict) -> RunConfig:
        """The config back from ``results_settings`` (plus any local fields): JSON's lists
        become the tuples they were."""
        tuples = ("loc_deltas", "input_size", "mean", "std", "shard")
        return cls(
            **{k: tuple(v) if k in tuples and v is not None else v for k, v in settings.items()}
        )

    def digest(self) -> str:
        """A short hash of the settings that change results (not where they are written)."""
        text = json.dumps(self.results_settings(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def command(self) -> str:
        """The command line that reproduces this run."""
        parts = ["reportgen run"]
        defaults = RunConfig()
        for key, value in self.to_dict().items():
            if key == "options":
                parts += [f"--set {m}.{k}={v}" for m, kv in value.items() for k, v in kv.items()]
            elif key in ("loc_deltas", *self.LOCAL) or value in (None, getattr(defaults, key)):
                continue
            elif isinstance(value, (tuple, list)):
                parts.append(f"--{key.replace('_', '-')} {','.join(str(v) for v in value)}")
            else:
                parts.append(f"--{key.replace('_', '-')} {value}")
        return " ".join(parts)
