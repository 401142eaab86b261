"""Names the command-line configs need, importable without torch (so ``--help`` answers at once).

They mirror `ether_diffusion.functional.METHODS`, `ether_diffusion.config.PROJECTIONS` and
`ether_diffusion.data.dreambooth.PROMPTS_FILE`, `ether_diffusion.models.tiny.TINY_ID` / `TINY_RESOLUTION` and
`ether_diffusion.models.control.HINT_CHANNELS` (a test keeps them equal).
"""

METHODS = ("ether", "ether_plus", "oft", "naive")
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
PROMPTS_FILE = "prompts_and_classes.txt"
TINY_ID = "tiny"
TINY_RESOLUTION = 64
HINT_CHANNELS = (16, 32, 96, 256)
