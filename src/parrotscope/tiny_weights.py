"""Tiny, randomly initialised stand-ins for the released weights this workflow can use, built
offline, so that every path that takes real weights (LaMa, Stable Diffusion) runs its own code in
the tests and in the GPU check (bench/gpu_check.py) without a download.

They exercise the code, not the quality: a stand-in's output means nothing.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_fake_lama(path: str | Path) -> Path:
    """A TorchScript module with big-lama.pt's call signature (``image, mask`` in [0, 1], sides
    multiples of 8, the image back): it returns the image with its colour channels reversed,
    which shows any shift from padding or cropping. Saved with ``torch.jit.script``, the way
    big-lama.pt itself was exported."""
    import torch

    class FakeLama(torch.nn.Module):
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            assert image.shape[2] % 8 == 0 and image.shape[3] % 8 == 0
            assert mask.shape[1] == 1 and mask.shape[2:] == image.shape[2:]
            assert float(image.max()) <= 1.0
            return image.flip(1)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(FakeLama()).save(str(path))
    return path


def clip_tokenizer_files(directory: str | Path, n_merges: int = 500) -> int:
    """Write CLIP's vocab.json/merges.txt from open_clip's bundled BPE file; return the vocab size.

    Same construction as CLIP's own tokenizer (bytes, bytes + ``</w>``, merges, two specials),
    truncated to the first ``n_merges`` merges to keep the model small.
    """
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:1 + n_merges]]
    base = list(bytes_to_unicode().values())
    vocab = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return len(vocab)


def write_tiny_sd(root: str | Path, seed: int = 0) -> Path:
    """A tiny random Stable Diffusion inpainting pipeline (UNet with 9 input channels, VAE, CLIP
    text encoder, DDIM) saved with diffusers' ``save_pretrained`` under ``root/pipeline``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = Path(root)
    n_vocab = clip_tokenizer_files(root / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(root / "tokenizer"), model_max_length=16)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=n_vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, projection_dim=16, bos_token_id=n_vocab - 2, eos_token_id=n_vocab - 1,
        pad_token_id=n_vocab - 1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(root / "pipeline")
    return root / "pipeline"
