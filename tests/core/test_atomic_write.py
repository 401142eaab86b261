"""`outputs.atomic_write`, the one way files are written whole (adapters, LoRA files, manifests, class images, the S2I
latent cache, the eval's stage records): a failed write keeps the old file and leaves no temporary file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ether_diffusion.outputs import atomic_write


def test_replaces_the_file_whole(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    atomic_write(path, lambda tmp: Path(tmp).write_text("new"))
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")

    def half_then_fail(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
