"""meshwatch: catch attackers inside a service mesh.

This package is the small shared core: records, settings, bounded state, the ClickHouse store,
the pipeline's composition root and the CLI. Parsing lives in `ingest`, detection in
`detectors`, alerting and the analyst feed in `alerts`.
"""

__version__ = "0.1.0"
