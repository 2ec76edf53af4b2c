"""The `imgstream` command (tooling: the engine never imports it): `main` (stack, job, publish,
results, demo), `bench` (benchmarks), `models` (the Triton model repositories)."""
