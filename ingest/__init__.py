"""Getting records in: sources (Kafka, files), parsers per format, identity resolution, span
pairing and the per-edge window graph builder."""
