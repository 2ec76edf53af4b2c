"""Fixtures shared by the unit tests."""
from __future__ import annotations

import pytest

from streaming.stack.layout import StackLayout
from triton_models import build, photos
from triton_models.variants import ArtifactStore


@pytest.fixture(scope="session")
def store() -> ArtifactStore:
    """The model artifact store in the stack's folder, with the calibration photos fetched."""
    store = build.store_in(StackLayout.from_env().root)
    photos.ensure_photos(store.photos_dir)
    return store
