"""The real CLIP tokenizer, built offline from the BPE vocabulary that ``open_clip_torch`` ships.

open_clip's ``bpe_simple_vocab_16e6.txt.gz`` holds the merges of OpenAI's CLIP; the vocabulary is the 256 byte
symbols, the same with ``</w>``, one token per merge, then the two special tokens (49,408 in all). That is the
``vocab.json`` / ``merges.txt`` pair of ``openai/clip-vit-large-patch14``, so the ids match open_clip's.
"""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # what open_clip reads of the file


def _bytes_to_unicode() -> dict[int, str]:
    # the printable-byte mapping of GPT-2 / CLIP BPE: 188 printable bytes map to themselves, the rest to 256 + i
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_clip_vocab(folder: str | os.PathLike) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the CLIP BPE into ``folder``; returns the folder."""
    import open_clip.tokenizer as oct

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(oct.default_bpe()).read().decode("utf-8").split("\n")[1: N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return folder


@lru_cache(maxsize=1)
def _default_vocab_dir() -> Path:
    cache = Path(os.environ.get("ETHER_DIFFUSION_CACHE", Path.home() / ".cache" / "ether_diffusion")) / "clip_bpe"
    if not ((cache / "vocab.json").is_file() and (cache / "merges.txt").is_file()):
        write_clip_vocab(cache)
    return cache


def clip_tokenizer(model_max_length: int = 77):
    """A transformers ``CLIPTokenizer`` with OpenAI CLIP's vocabulary (49,408 ids, pad = eos, 77 tokens)."""
    from transformers import CLIPTokenizer

    folder = _default_vocab_dir()
    # from_pretrained reads vocab.json + merges.txt in transformers 4 and 5 alike
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=model_max_length, pad_token="<|endoftext|>")
