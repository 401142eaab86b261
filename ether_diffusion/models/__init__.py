"""Model configs (SD 1.5, SD 2.1, tiny), the tiny CPU pipeline and the CLIP tokenizer built from open_clip's BPE."""
