"""Forward-only attributions from altered inputs or activations (batched, no gradients)."""

from __future__ import annotations
