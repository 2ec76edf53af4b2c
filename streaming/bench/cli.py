"""`imgstream bench ...`: benchmarks that print tables and ratios against baselines measured in the same run."""
from __future__ import annotations

import typer

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (tables + JSON; never timed assertions in tests).")
