"""Run settings in one place; hashed so a later resume can check them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


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
    options: dict[str, dict[str, object]] = field(default_factory=dict)  # from --set
    loc_deltas: tuple[float, ...] = field(default=(0.0, 0.25, 0.5))

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        """A short hash of the settings that change results (not where they are written)."""
        settings = {k: v for k, v in self.to_dict().items() if k != "out"}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]

    def command(self) -> str:
        """The command line that reproduces this run."""
        parts = ["reportgen run"]
        defaults = RunConfig()
        for key, value in self.to_dict().items():
            if key == "options":
                parts += [f"--set {m}.{k}={v}" for m, kv in value.items() for k, v in kv.items()]
            elif key != "loc_deltas" and value != getattr(defaults, key) and value is not None:
                parts.append(f"--{key.replace('_', '-')} {value}")
        return " ".join(parts)
