"""ether-diffusion: ETHER / ETHER+ hyperplane-reflection finetuning for diffusers models."""

__version__ = "0.1.0"

from .config import ConfigError, EtherConfig  # noqa: E402
from .io import AdapterMismatchError, load_ether, save_ether  # noqa: E402
from .multi import adapter_names, set_active_adapter, set_mixed_form  # noqa: E402
from .patch import (  # noqa: E402
    EtherError,
    apply_ether,
    ether_parameters,
    merge_ether,
    remove_ether,
    unmerge_ether,
)

__all__ = [
    "EtherConfig", "ConfigError", "EtherError", "AdapterMismatchError",
    "apply_ether", "ether_parameters", "save_ether", "load_ether", "merge_ether", "unmerge_ether", "remove_ether",
    "adapter_names", "set_active_adapter", "set_mixed_form",
]
