"""The denoising loss of latent diffusion training, epsilon or v-prediction, with all randomness from one generator.

Drawing noise, timesteps and VAE samples from an explicit `torch.Generator` (checkpointed with the run) is what makes
a resumed run continue exactly where the interrupted one was. Under data parallelism every process holds the same
generator and draws for the whole global batch, keeping its own rows (`Shard`): a sample gets the same noise however
many processes share the batch, so 2 processes x batch b train what 1 process x batch 2b trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Shard:
    """This process's rows of the global batch: ``size`` processes each hold ``groups`` equal runs of samples, in
    order (DreamBooth with prior preservation: instance images, then class images); the global batch holds group 0
    of every process, then group 1 of every process."""

    rank: int = 0
    size: int = 1
    groups: int = 1

    def rows(self, draw, shape: tuple) -> torch.Tensor:
        """``draw(global_shape)`` -> this process's rows, shape ``shape`` (B, ...)."""
        if self.size == 1:
            return draw(tuple(shape))
        per = shape[0] // self.groups
        full = draw((shape[0] * self.size, *shape[1:]))  # (G * size * per, ...)
        return full.view(self.groups, self.size, per, *shape[1:])[:, self.rank].reshape(shape)


def randn(shape, generator: torch.Generator, device, dtype=torch.float32, shard: Shard = Shard()) -> torch.Tensor:
    draw = lambda s: torch.randn(s, generator=generator, device=generator.device, dtype=dtype)  # noqa: E731
    return shard.rows(draw, tuple(shape)).to(device)


@torch.no_grad()
def encode_posterior(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) in [-1, 1] -> the VAE posterior's (mean, std), each (B, 4, H/8, W/8) in the VAE's dtype."""
    dist = vae.encode(pixels.to(vae.dtype)).latent_dist
    return dist.mean, dist.std


def sample_latents(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator,
                   scaling_factor: float, shard: Shard = Shard()) -> torch.Tensor:
    """One draw from the posterior ``N(mean, std^2)``, scaled: (B, 4, h, w)."""
    return (mean + std * randn(mean.shape, generator, mean.device, mean.dtype, shard)) * scaling_factor


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, generator: torch.Generator, shard: Shard = Shard()) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 4, H/8, W/8) scaled latents, sampled from the VAE posterior."""
    mean, std = encode_posterior(vae, pixels)
    return sample_latents(mean, std, generator, vae.config.scaling_factor, shard)


def diffusion_target(noise_scheduler, latents, noise, timesteps) -> torch.Tensor:
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"prediction_type {kind!r} is not supported; use 'epsilon' or 'v_prediction'")


def draw_noise(latents: torch.Tensor, num_train_timesteps: int, generator: torch.Generator,
               shard: Shard = Shard()) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's randomness: noise like ``latents`` (B, 4, h, w) and timesteps (B,) in [0, num_train_timesteps)."""
    noise = randn(latents.shape, generator, latents.device, torch.float32, shard).to(latents.dtype)
    draw = lambda s: torch.randint(0, num_train_timesteps, s, generator=generator, device=generator.device)  # noqa: E731
    t = shard.rows(draw, (latents.shape[0],)).to(latents.device)
    return noise, t


def denoising_loss(unet, noise_scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                   encoder_hidden_states: torch.Tensor, **unet_kwargs) -> torch.Tensor:
    """Per-sample MSE between the UNet's prediction at timesteps ``t`` and its target; shape (B,).

    Pure tensor work with no host sync, so it can be captured in a CUDA graph. ``latents`` / ``noise`` (B, 4, h, w);
    ``t`` (B,); ``encoder_hidden_states`` (B, 77, C); extra ``unet_kwargs`` go to the UNet call (S2I: the control).
    """
    noisy = noise_scheduler.add_noise(latents, noise, t)
    pred = unet(noisy, t, encoder_hidden_states, return_dict=False, **unet_kwargs)[0]
    target = diffusion_target(noise_scheduler, latents, noise, t)
    return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))


def diffusion_loss(unet, noise_scheduler, latents: torch.Tensor, encoder_hidden_states: torch.Tensor,
                   generator: torch.Generator, **unet_kwargs) -> torch.Tensor:
    """`draw_noise` then `denoising_loss`: per-sample loss at a random timestep, shape (B,)."""
    noise, t = draw_noise(latents, noise_scheduler.config.num_train_timesteps, generator)
    return denoising_loss(unet, noise_scheduler, latents, noise, t, encoder_hidden_states, **unet_kwargs)


@torch.no_grad()
def encode_prompts(pipe, prompts: str | list[str], device) -> torch.Tensor:
    """(B, 77, C) hidden states of the frozen text encoder (B = 1 for a single prompt)."""
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(device)
    return pipe.text_encoder(ids)[0]
