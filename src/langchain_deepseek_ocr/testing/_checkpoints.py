"""Builders of tiny random-weight checkpoints in the published DeepSeek-OCR layouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "SPECIAL_TOKENS",
    "build_tiny_tokenizer",
    "build_tiny_v1",
    "build_tiny_v2",
    "v1_published_config",
]

REAL_ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (0, "<｜begin▁of▁sentence｜>", True),
    (1, "<｜end▁of▁sentence｜>", True),
    (2, "<｜▁pad▁｜>", True),
    (128815, "<image>", True),
    (128816, "<|ref|>", True),
    (128817, "<|/ref|>", True),
    (128818, "<|det|>", True),
    (128819, "<|/det|>", True),
    (128820, "<|grounding|>", True),
    (128821, "<td>", False),
    (128822, "</td>", False),
    (128823, "<tr>", False),
    (128824, "</tr>", False),
    (128825, "<|User|>", False),
    (128826, "<|Assistant|>", False),
)
"""``(id, text, special)`` of the real tokenizer's added tokens.

Ids 0-2 and 128815-128822 are verified in upstream code (BOS/EOS, ``<image>``, the n-gram
whitelist ``<td>``/``</td>``); 128823-128826 follow the reported order of the added-token
block. ``<td>`` and the tokens after it are added but not special, so
``skip_special_tokens`` keeps them.
"""

SPECIAL_TOKENS = tuple(text for _id, text, _special in REAL_ADDED_TOKENS)
"""The tokenizer's special tokens, in the order of the real added-token block."""

_CORPUS = [
    "Convert the document to markdown.",
    "OCR this image. Free OCR. Parse the figure. Describe this image in detail.",
    "Locate the hat in the image.",
    "# Title\n\n## Section 1.2\n\nThe quick brown fox jumps over the lazy dog.",
    "<table><tr><td>52-week</td><td>High</td><td>Low</td></tr></table>",
    "Invoice 2024-001: total 1,234.56 EUR. Date 12/03/2024.",
    "\\( x^2 + y^2 = z^2 \\) and \\[ \\int_0^1 f(x) dx \\]",
    "[[65, 142, 740, 255]] [[0, 0, 999, 999]] title text image table caption",
    "Übungsblatt DGL 4 — résumé, naïve, 先天下之忧而忧 一段接一段",
]


def build_tiny_tokenizer(folder: Path, *, vocab_size: int = 400) -> Any:
    """Train a small byte-level BPE with DeepSeek-OCR's special tokens and save it.

    Writes ``tokenizer.json`` and ``tokenizer_config.json`` (the layout of the published
    checkpoints) into ``folder``.

    Returns:
        The ``tokenizers.Tokenizer``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": False,
                "add_eos_token": False,
                "bos_token": SPECIAL_TOKENS[0],
                "eos_token": SPECIAL_TOKENS[1],
                "pad_token": SPECIAL_TOKENS[2],
                "model_max_length": 8192,
                "padding_side": "left",
                "tokenizer_class": "LlamaTokenizerFast",
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return tok


def published_language_config(
    *,
    vocab_size: int,
    hidden_size: int,
    layers: int,
    heads: int,
    experts: int,
    max_positions: int,
) -> dict[str, Any]:
    """The ``language_config`` of a published v1 or v2 ``config.json``, shrunk.

    Both families ship the same DeepSeek-V2 decoder layout (the file repeats these keys at
    its top level too).
    """
    return {
        "architectures": ["DeepseekV2ForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_deepseekv2.DeepseekV2Config",
            "AutoModel": "modeling_deepseek.DeepseekV2Model",
            "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM",
        },
        "bos_token_id": 0,
        "eos_token_id": 1,
        "first_k_dense_replace": 1,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "kv_lora_rank": None,
        "lm_head": True,
        "max_position_embeddings": max_positions,
        "moe_intermediate_size": hidden_size // 2,
        "n_group": 1,
        "n_routed_experts": experts,
        "n_shared_experts": 1,
        "num_attention_heads": heads,
        "num_experts_per_tok": 2,
        "num_hidden_layers": layers,
        "num_key_value_heads": heads,
        "q_lora_rank": None,
        "qk_nope_head_dim": 0,
        "qk_rope_head_dim": 0,
        "rm_head": False,
        "topk_group": 1,
        "topk_method": "greedy",
        "torch_dtype": "float32",
        "use_mla": False,
        "v_head_dim": 0,
        "vocab_size": vocab_size,
    }


def v1_published_config(
    *,
    vocab_size: int,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    experts: int = 4,
    sam_width: int = 32,
    sam_layers: int = 2,
    clip_width: int = 32,
    clip_layers: int = 2,
    max_positions: int = 8192,
) -> dict[str, Any]:
    """A v1 ``config.json`` in the layout ``deepseek-ai/DeepSeek-OCR`` publishes, shrunk.

    The keys and nesting are those of the real file (``language_config``,
    ``vision_config.width.{sam_vit_b, clip-l-14-224}``, ``projector_config``); only the
    sizes are small. The language keys are repeated at the top level as in the real file.
    """
    lang = published_language_config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        layers=layers,
        heads=heads,
        experts=experts,
        max_positions=max_positions,
    )
    config: dict[str, Any] = {
        "_name_or_path": "tiny-random/DeepSeek-OCR",
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "architectures": ["DeepseekOCRForCausalLM"],
        "auto_map": {
            "AutoConfig": "modeling_deepseekocr.DeepseekOCRConfig",
            "AutoModel": "modeling_deepseekocr.DeepseekOCRForCausalLM",
        },
        "language_config": lang,
        "model_type": "deepseek_vl_v2",
        "projector_config": {
            "input_dim": 2 * clip_width,
            "model_type": "mlp_projector",
            "n_embed": hidden_size,
            "projector_type": "linear",
        },
        "tile_tag": "2D",
        "torch_dtype": "float32",
        "transformers_version": "4.46.3",
        "vision_config": {
            "image_size": 1024,
            "mlp_ratio": 3.7362,
            "model_name": "deeplip_b_l",
            "model_type": "vision",
            "width": {
                "clip-l-14-224": {
                    "heads": 2,
                    "image_size": 224,
                    "layers": clip_layers,
                    "patch_size": 14,
                    "width": clip_width,
                },
                "sam_vit_b": {
                    "downsample_channels": [clip_width // 2, clip_width],
                    "global_attn_indexes": [sam_layers - 1],
                    "heads": 2,
                    "layers": sam_layers,
                    "width": sam_width,
                },
            },
        },
    }
    for key, value in lang.items():
        if key not in ("architectures", "auto_map"):
            config[key] = value
    return config


def _write_generation_config(folder: Path, bos: int, eos: int, pad: int) -> None:
    (folder / "generation_config.json").write_text(
        json.dumps(
            {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "do_sample": False}
        ),
        encoding="utf-8",
    )


def build_tiny_v1(folder: Path | str, *, seed: int = 0, **sizes: Any) -> Path:
    """Write a tiny random DeepSeek-OCR v1 checkpoint in the published layout.

    ``config.json`` has the published v1 layout (``model_type: deepseek_vl_v2``,
    ``architectures: [DeepseekOCRForCausalLM]``) and ``model.safetensors`` the original
    weight names (``model.sam_model.*``, ``model.vision_model.*`` with fused ``qkv_proj``,
    ``model.view_seperator``, ``model.projector.layers.*``, ``model.layers.*``,
    ``lm_head.weight``), including the CLIP patch embedding the model never uses.

    Args:
        folder: Where to write it (created).
        seed: Seed of the random weights.
        **sizes: Overrides for :func:`v1_published_config` (``hidden_size``, ``layers``...).

    Returns:
        The folder.
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import UnlimitedOcrForConditionalGeneration

    from langchain_deepseek_ocr._checkpoint import translate_v1_config

    folder = Path(folder)
    tok = build_tiny_tokenizer(folder)
    config = v1_published_config(vocab_size=tok.get_vocab_size(), **sizes)
    image_id = tok.token_to_id("<image>")
    torch.manual_seed(seed)
    native = translate_v1_config(config, image_token_id=image_id)
    model = UnlimitedOcrForConditionalGeneration(native).eval()
    _randomise(model, seed)
    with _quiet():
        model.save_pretrained(folder)  # transformers writes the original v1 weight names back
    weights = load_file(str(folder / "model.safetensors"))
    clip = config["vision_config"]["width"]["clip-l-14-224"]
    gen = torch.Generator().manual_seed(seed + 1)
    weights["model.vision_model.embeddings.patch_embedding.weight"] = torch.randn(
        clip["width"], 3, clip["patch_size"], clip["patch_size"], generator=gen
    )
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    _write_generation_config(folder, 0, 1, 2)
    return folder


def build_tiny_v2(folder: Path | str, *, seed: int = 0) -> Path:
    """Write a tiny random DeepSeek-OCR-2 checkpoint in the native transformers layout.

    The layout of ``deepseek-community/DeepSeek-OCR-2``: ``DeepseekOcr2Config``,
    ``model.safetensors``, the processor files and ``tokenizer.json``. The vision geometry
    is the real one (SAM patch 16 on 1024 / 768 views), so the 256- and 144-query tables
    and every token count match the full-size model.

    Returns:
        The folder.
    """
    import torch
    from transformers import (
        DeepseekOcr2Config,
        DeepseekOcr2ForConditionalGeneration,
        DeepseekOcr2ImageProcessorPil,
        DeepseekOcr2Processor,
        PreTrainedTokenizerFast,
    )

    folder = Path(folder)
    tok = build_tiny_tokenizer(folder)
    torch.manual_seed(seed)
    config = DeepseekOcr2Config(
        vision_config={
            "sam_config": {
                "hidden_size": 32,
                "output_channels": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "global_attn_indexes": [1],
                "downsample_channels": [16, 32],
            },
            "encoder_config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
            },
        },
        text_config={
            "vocab_size": tok.get_vocab_size(),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "mlp_layer_types": ["dense", "sparse"],
            "n_routed_experts": 4,
            "n_shared_experts": 1,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "max_position_embeddings": 8192,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 2,
        },
        image_token_id=tok.token_to_id("<image>"),
    )
    model = DeepseekOcr2ForConditionalGeneration(config).eval()
    _randomise(model, seed)
    with _quiet():
        model.save_pretrained(folder)
    fast = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"),
        bos_token=SPECIAL_TOKENS[0],
        eos_token=SPECIAL_TOKENS[1],
        pad_token=SPECIAL_TOKENS[2],
        padding_side="left",
    )
    processor = DeepseekOcr2Processor(
        image_processor=DeepseekOcr2ImageProcessorPil(), tokenizer=fast
    )
    processor.save_pretrained(folder)
    _write_generation_config(folder, 0, 1, 2)
    return folder


def _randomise(model: Any, seed: int) -> None:
    """Give every floating weight a visible random value (some inits are ~0, e.g. SAM's)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.dtype.is_floating_point:
                continue
            if name.endswith(
                ("norm.weight", "norm1.weight", "norm2.weight", "layrnorm.weight")
            ) or ("layer_norm" in name and name.endswith("weight")):
                param.fill_(1.0)
                continue
            std = 0.02 if param.dim() > 1 else 0.01
            param.copy_(torch.randn(param.shape, generator=gen) * std)


def _quiet() -> Any:
    from langchain_deepseek_ocr._transformers_engine import _quiet_transformers

    return _quiet_transformers()
