"""A Triton of its own beside the stack's: the stack's server binary on other ports, serving
another repository, with its own pid and log files (`<name>.*`); always stopped on exit.

`imgstream models eval` loads one on ports 28000-28002 (`eval_triton`), the naive baseline of
`imgstream bench e2e` another on 28100-28102 (`naive.naive_triton`).
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from streaming.stack import process, triton
from streaming.stack.layout import StackLayout

EVAL_PORTS = (28000, 28001, 28002)  # http, grpc, metrics: away from the stack's 8000-8002
EVAL_SERVICE = "triton-eval"


@contextmanager
def side_triton(layout: StackLayout, repository: Path, ports: tuple[int, int, int],
                name: str) -> Iterator[StackLayout]:
    """A Triton serving `repository` on `ports` (http, grpc, metrics); yields its layout
    (`triton_grpc` is the address)."""
    own = dataclasses.replace(layout, triton_http_port=ports[0], triton_grpc_port=ports[1],
                              triton_metrics_port=ports[2])
    spec = dataclasses.replace(triton.triton_service(own, repository), name=name)
    try:
        process.start(spec, own.run_dir)
        yield own
    finally:
        process.stop(own.run_dir, name)


@contextmanager
def eval_triton(repository: Path, layout: StackLayout | None = None,
                ports: tuple[int, int, int] = EVAL_PORTS) -> Iterator[str]:
    """The Triton of `imgstream models eval`; yields its gRPC address."""
    with side_triton(layout or StackLayout.from_env(), repository, ports, EVAL_SERVICE) as own:
        yield own.triton_grpc
