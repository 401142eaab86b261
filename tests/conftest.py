import os

# nothing in the tests may reach a model hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def pytest_configure(config):
    """S2I runs cache their latents in a folder of the test session, not in the user's ~/.cache."""
    import tempfile

    os.environ.setdefault("ETHER_DIFFUSION_CACHE", tempfile.mkdtemp(prefix="ether-cache-"))
