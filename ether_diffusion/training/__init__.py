"""Training machinery shared by the scripts (scripts -> training -> core), one small module per job.

Shared loop pieces (used by DreamBooth, S2I and the robustness study):
    config.py       parse_config / load_config / save_config over any dataclass (defaults < YAML < CLI), check_fields
    options.py      TrainConfig: the fields every training script shares (flag names as in diffusers' examples)
    accelerator.py  build_accelerator(cfg) (precision, accumulation, trackers, seeded sampler, TF32), weight_dtype
    optim.py        build_optimizer (AdamW / 8-bit AdamW), build_lr_scheduler (diffusers' schedulers), scale_lr
    adapters.py     add / save / load / merge for ether, ether_plus, oft, naive and PEFT LoRA
    loss.py         encode_latents, diffusion_loss (epsilon / v-prediction), all noise from one generator
    checkpoint.py   atomic checkpoint-<step> folders with a COMPLETE marker, rotation, exact resume
    validation.py   validation images -> PNG + TensorBoard / wandb
    loop.py         plan_steps, train_loop (accumulation, clipping, tqdm, checkpoints, validation, resume)
    manifest.py     write_manifest: the manifest.jsonl contract with the eval package
    cli.py          run_cli: one-line errors for user mistakes
DreamBooth:
    dreambooth.py   DreamBoothConfig, train_dreambooth
    class_images.py prior-preservation class images, generated once and kept
    generation.py   GenerateConfig, generate (adapter or base, DreamBooth eval prompts, fixed seeds, multi-GPU)
    demo_config.py  DemoConfig (light, for --help)
    demo.py         run_demo: train -> generate -> evaluate -> REPORT.md
Export:
    export_config.py ExportConfig (light, for --help)
    export_run.py   export: an adapter folder -> one LoRA file (ether_diffusion.export) or a merged pipeline folder
"""
