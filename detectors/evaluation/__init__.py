"""Evaluation tools: the NAB scorer (`nab`), its corpus loader (`nab_data`) and the runner that
benchmarks a registered detector on a NAB corpus (`nab_runner`)."""
