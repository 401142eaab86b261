"""The two errors a user of `eval` can meet, each raised with one line that says what to do."""

from __future__ import annotations


class EvalInputError(ValueError):
    """A manifest, folder or option that cannot be scored as given (bad row, missing file, wrong layout)."""


class ModelNotAvailableError(RuntimeError):
    """A scoring model (DINO, CLIP, LPIPS backbone, segmenter, Inception) that cannot be loaded here.

    The message names the model and how to provide it, e.g.
    "DINO model 'facebook/dino-vits16' is not available offline; download it on a machine with internet
    (hf download facebook/dino-vits16 --local-dir dino-vits16) and pass --dino /path/to/it".
    """
