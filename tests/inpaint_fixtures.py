"""A tiny random SD inpainting pipeline, built offline and saved with save_pretrained, and small
real-image folders: what tests/test_inpaint.py generates from (inpainting.md, "Tiny offline pipeline")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# the real SD-1.5 (inpainting) scheduler config
SD15_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}


def byte_level_vocab() -> dict[str, int]:
    """256 byte symbols (GPT-2's byte-to-unicode map), the same with `</w>`, then start/end tokens."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    symbols = [chr(c) for c in cs]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def build_tiny_sd_inpaint(folder: Path) -> Path:
    """StableDiffusionInpaintPipeline from tiny random parts (UNet with 9 input channels, a 4-block
    VAE with scale factor 8 like the real one, a 1-layer CLIP text model, an offline byte-level CLIP
    tokenizer with model_max_length=77), saved to `folder`."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=64,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=8,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 8, 16, 16],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1,
        sample_size=64,
    )
    vocab = byte_level_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    eos = vocab["<|endoftext|>"]
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=eos,
            pad_token_id=eos,
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=16,
            num_attention_heads=2,
            num_hidden_layers=1,
            layer_norm_eps=1e-5,
            projection_dim=16,
        )
    )
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth, photo-like RGB image (gradients plus a little noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    channels = [127 + 100 * np.sin(x / (9 + 5 * c) + y / (13 + 3 * c) + phase[c]) for c in range(3)]
    image = np.stack(channels, -1) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def make_real_dir(folder: Path, sizes: list[tuple[int, int]], corrupt: bool = False) -> list[str]:
    """JPEGs and PNGs of the given sizes (one in a subfolder), optionally one corrupt file; the stems."""
    stems = []
    for i, (w, h) in enumerate(sizes):
        sub = folder / ("nested" if i == 1 else "")
        sub.mkdir(parents=True, exist_ok=True)
        stem = f"real_{i:02d}"
        if i % 2:
            photo(w, h, i).save(sub / f"{stem}.png")
        else:
            photo(w, h, i).save(sub / f"{stem}.jpg", quality=90)
        stems.append(stem)
    if corrupt:
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return stems
