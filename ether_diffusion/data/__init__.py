"""Datasets: robust image-folder loading (images.py) and the DreamBooth instance/class dataset (dreambooth.py)."""
