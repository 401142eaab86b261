"""Names the command-line configs need, importable without torch (so ``--help`` answers at once).

The library's modules take them from here (`functional.METHODS`, `config.PROJECTIONS`, `data.dreambooth.PROMPTS_FILE`,
`models.tiny.TINY_ID` / `TINY_RESOLUTION`, `models.control.HINT_CHANNELS`).
"""

METHODS = ("ether", "ether_plus", "oft", "naive")
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
PROMPTS_FILE = "prompts_and_classes.txt"
TINY_ID = "tiny"
TINY_RESOLUTION = 64
HINT_CHANNELS = (16, 32, 96, 256)
