"""`imgstream models ...`: build (and evaluate) the Triton model repository."""
from __future__ import annotations

import typer

from streaming.stack.layout import StackLayout

models_app = typer.Typer(no_args_is_help=True, help="The Triton model repository.")


@models_app.command("build")
def models_build(instances: int = 1, max_batch: int = 32) -> None:
    """Export the model to ONNX and write the Triton model repository."""
    from triton_models.build import build_repository
    layout = StackLayout.from_env()
    build_repository(layout.model_repository, instances=instances, max_batch_size=max_batch)
    typer.echo(layout.model_repository)
