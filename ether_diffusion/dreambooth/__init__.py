"""DreamBooth: train an adapter on a few photos of one subject, sample the subject's evaluation prompts, score them,
export the adapter. The glue between the DreamBooth data, the adapters and the shared loop of `training`.

    config.py           DreamBoothConfig (training), its tiny-model sizes, the shipped configs/<method>.yaml
    train.py            train_dreambooth(cfg)
    class_images.py     prior-preservation class images, generated once and kept
    generate_config.py  GenerateConfig (light, for --help)
    generate.py         generate(cfg): adapter or base model, DreamBooth eval prompts, fixed seeds, multi-GPU
    requests.py         the requests file of mixed-subject generation (one adapter per sample)
    evaluate.py         evaluate_samples: the eval package as a library (DINO, CLIP-I, CLIP-T, LPIPS)
    demo_config.py      DemoConfig (light, for --help)
    demo.py             run_demo: train -> generate -> evaluate -> REPORT.md
    export_config.py    ExportConfig (light, for --help)
    export_run.py       export: an adapter folder -> one LoRA file (ether_diffusion.export) or a merged pipeline folder
"""
