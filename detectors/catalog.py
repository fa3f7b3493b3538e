"""Importing this module registers every built-in detector."""

from detectors import (  # noqa: F401
    batch,
    certs,
    chains,
    crown_jewels,
    identity,
    lateral,
    models,
    mtls,
    plaintext,
    policy,
    scan,
    streaming,
    traffic,
)
