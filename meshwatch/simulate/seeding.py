"""Named, seeded random streams.

Each component (mesh, benign traffic, each scenario instance, span ids) draws from its own
stream, so adding an attack to a run does not reshuffle the benign traffic around it, and the
same seed always gives the same bytes. These are simulations, not secrets: `random.Random` is
the right tool (string seeds are hashed with SHA-512, so they do not depend on PYTHONHASHSEED).
"""

from __future__ import annotations

import random


def stream(seed: int, name: str) -> random.Random:
    """The RNG stream ``name`` of run ``seed``."""
    return random.Random(f"{seed}:{name}")  # noqa: S311 - reproducible simulation, not crypto
