"""Fault and abuse tests (issue 11): crashes, outages and hostile input, with exact counts."""
