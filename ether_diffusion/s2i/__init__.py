"""Semantic-map-to-image (S2I) training and sampling: the glue between the ADE20K data, the control encoder and the
shared training machinery.

    config.py    S2IConfig (training), S2IGenerateConfig (sampling from maps)
    model.py     build / save / load an S2I model: frozen UNet + adapter (or none) + control encoder
    sampling.py  images from maps through a StableDiffusionPipeline; the validation grid (map | generated)
    cache.py     the training cache folder: posteriors, maps and caption embeddings, one keyed file per sample
    train.py     train_s2i(cfg)
    generate.py  generate_s2i(cfg): a folder of annotations -> images + manifest.jsonl for `python -m eval s2i`
"""
