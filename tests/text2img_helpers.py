"""A tiny random-weight Stable Diffusion pipeline, built from configs and saved like a real checkpoint.

Everything is made here, offline: a UNet, a VAE and a CLIP text encoder a few kilobytes big, a
CLIP tokenizer read from a vocab.json and merges.txt written below, and a DDIM scheduler. The
directory it writes loads with ``StableDiffusionPipeline.from_pretrained(path)``, which is what
modelq's ``diffusers`` loader does.
"""

from __future__ import annotations

import json
from pathlib import Path

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_WORDS = ("cat", "dog", "red", "blue", "lighthouse", "sunset")


def _write_tokenizer_files(folder: Path) -> Path:
    """A byte-pair vocabulary: single letters (inside and at the end of a word) and a few whole words."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>", "!", *_LETTERS, *(c + "</w>" for c in _LETTERS)]
    merges: list[str] = []
    for word in _WORDS:
        # merge left to right: "c a" -> "ca", "ca t</w>" -> "cat</w>"
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            if pieces[0] not in tokens:
                tokens.append(pieces[0])
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return folder


def make_tiny_sd(path: Path) -> Path:
    """Write a tiny StableDiffusionPipeline to ``path`` (about 200 KB) and return ``path``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(
        str(_write_tokenizer_files(path.parent / f"{path.name}-tokenizer-files")), model_max_length=16, pad_token="!"
    )
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            vocab_size=len(tokenizer),
            hidden_size=8,
            intermediate_size=16,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=16,
            projection_dim=8,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)
    return path


#: The name the tiny pipeline is declared under, and the caps the image tests run with
#: (small, so the 422s are cheap to reach).
TINY_MODEL = "tiny-sd"
TINY_CAPS = {"image_max_side": 256, "image_max_steps": 300, "image_max_count": 4}


def tiny_image_stack(root: Path) -> tuple[dict, dict[str, str], object, object]:
    """Settings, a worker environment and a Celery app declaring the tiny pipeline at ``root/tiny-sd``.

    Returns (models, env, settings, app); the embedded broker under ``root/home`` is started
    and the job store migrated. Build the pipeline with :func:`make_tiny_sd` while workers start.
    """
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    models = {
        TINY_MODEL: {
            "loader": "diffusers",
            "source": str(root / TINY_MODEL),
            "device": "cpu",
            "options": {"pipeline": "StableDiffusionPipeline"},
        }
    }
    env = {
        "MODELQ_HOME": str(root / "home"),
        "MODELQ_MODELS": json.dumps(models),
        "HF_HUB_OFFLINE": "1",
        **{f"MODELQ_{key.upper()}": str(value) for key, value in TINY_CAPS.items()},
    }
    settings = load_settings(home=root / "home", models=models, imports=["modelq_test_tasks"], **TINY_CAPS)
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the workers start
    return models, env, settings, app
