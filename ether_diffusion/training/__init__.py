"""The training loop every application shares (DreamBooth, S2I, the robustness study), one small module per job;
the applications themselves are the sibling packages `ether_diffusion.dreambooth` and `ether_diffusion.s2i`.

    options.py      TrainConfig: the fields every training script shares (flag names as in diffusers' examples);
                    AdapterOptions, the adapter group, checked as an `EtherConfig` (or LoRA's own checks) at once
    accelerator.py  build_accelerator(cfg) (precision, accumulation, trackers, seeded sampler, TF32), weight_dtype
    adapters.py     add / save / load / merge for ether, ether_plus, oft, naive and PEFT LoRA
    optim.py        build_optimizer (AdamW / 8-bit AdamW; capturable, tensor learning rates for a CUDA graph),
                    build_lr_scheduler (diffusers' schedulers), scale_lr
    loss.py         encode_latents, draw_noise + denoising_loss (epsilon / v-prediction), all noise from one generator
    latent_cache.py VAE posteriors of a fixed training set encoded once (RowTable), sampled like encode_latents
    checkpoint.py   atomic checkpoint-<step> folders with a COMPLETE marker, rotation, exact resume
    run_folder.py   the output folder: checked before any model loads, cleared with overwrite_output_dir
    setup.py        frozen base models, noise scheduler, loader, trackers, when a CUDA graph is safe, the final save
    cuda_graph.py   GraphedStep: a whole optimiser step replayed from a CUDA graph per input signature
    loop.py         plan_steps, train_loop (accumulation, clipping, tqdm, logging, checkpoints, validation, resume)
    validation.py   validation images -> PNG + TensorBoard / wandb
What the scripts share around it:
    base_model.py   the base model a trained folder records (its train_config.yaml)
    tiny_defaults.py with_tiny_defaults: tiny-model sizes unless a flag sets them
    cli.py          run_cli: one-line errors for user mistakes
"""
