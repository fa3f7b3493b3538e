"""Alerting: lifecycle and dedup, runbooks, routing and sinks, and the analyst feed (API + UI)."""
