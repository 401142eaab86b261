"""Training machinery shared by the scripts: config loading, accelerator, optimiser, loss, checkpoints, the loop.

    config.py      parse_config / load_config / save_config over any dataclass (YAML < CLI), check_fields
    options.py     TrainConfig: the fields every training script shares
    accelerator.py build_accelerator(cfg), weight_dtype(accelerator)
    optim.py       build_optimizer, build_lr_scheduler (diffusers' schedulers), scale_lr
    adapters.py    add / save / load / merge for ether, ether_plus, oft, naive and PEFT LoRA
    loss.py        encode_latents, diffusion_loss (epsilon / v-prediction) from one generator
    checkpoint.py  atomic checkpoint-<step> folders with a COMPLETE marker, rotation, resume
    validation.py  validation images -> PNG + TensorBoard / wandb
    loop.py        plan_steps, train_loop (accumulation, clipping, tqdm, checkpoints, validation, exact resume)
    cli.py         run_cli: one-line errors for user mistakes
"""
