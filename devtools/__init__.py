"""Developer tools shared by the tests and the benchmarks (never shipped).

Neither `tests/` nor `benchmarks/` imports the other: what both need (the
real control plane on loopback) lives here. Nothing in this package is
installed by pyproject.toml (it packages only `sft_*` and `sftctl`) or copied
into an image (the Dockerfiles copy `operator/` and `trainer_image/`).
"""
