"""Finding, recognising and loading DeepSeek-OCR checkpoints -- no ``trust_remote_code``.

Three layouts are read:

* **v1 as published** (``deepseek-ai/DeepSeek-OCR``): ``model_type: deepseek_vl_v2``,
  ``architectures: [DeepseekOCRForCausalLM]``, ``language_config`` / ``vision_config`` /
  ``projector_config`` and the original weight names. The config is translated here into
  transformers' ``unlimited_ocr`` classes (the v1 architecture); transformers renames the
  weights itself on load. v1 attends fully on every decoder layer (no sliding window).
* **v2 as published** (``deepseek-ai/DeepSeek-OCR-2``): the same ``deepseek_vl_v2`` layout
  with ``architectures: [DeepseekOCR2ForCausalLM]``. The config is translated into a
  ``DeepseekOcr2Config`` (the vision sizes DeepSeek's code fixes, see
  :func:`translate_v2_config`); transformers renames the original weight names
  (``model.sam_model.*``, ``model.qwen2_model.*``, ``model.projector.*``...) on load.
* **v2 native** (``deepseek-community/DeepSeek-OCR-2``): ``model_type: deepseek_ocr2``,
  loaded with transformers' ``DeepseekOcr2ForConditionalGeneration``.

A folder already in the ``unlimited_ocr`` layout is read as v1 too. Loading fails when a
weight the model needs is missing, when the checkpoint holds a tensor the model does not
use, or when a shape does not fit: a silently ignored weight would change the output.

The tokenizer is read straight from ``tokenizer.json`` with the ``tokenizers`` library, so
no tokenizer class mapping can change how the published vocabulary splits text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_deepseek_ocr._errors import ConfigurationError, ModelLoadError
from langchain_deepseek_ocr._parse import BOS as BOS_TEXT
from langchain_deepseek_ocr._parse import EOS as EOS_TEXT
from langchain_deepseek_ocr._parse import PAD as PAD_TEXT
from langchain_deepseek_ocr._tasks import IMAGE_TOKEN as IMAGE_TEXT
from langchain_deepseek_ocr._tasks import ModelFamily

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "SpecialTokens",
    "detect_family",
    "load_model",
    "read_config",
    "resolve_model_path",
    "translate_v1_config",
    "translate_v2_config",
]

DEFAULT_MODEL = "deepseek-ai/DeepSeek-OCR"
"""The default checkpoint: DeepSeek-OCR v1 (all six tasks, five resolution modes)."""


_V1_ARCH = "DeepseekOCRForCausalLM"
_V2_ARCH = "DeepseekOCR2ForCausalLM"


def resolve_model_path(model: str | os.PathLike[str]) -> Path:
    """A local folder holding the checkpoint, from a folder path or a hub id.

    A hub id is looked up in the local Hugging Face cache first and downloaded only when
    the hub can be reached.

    Raises:
        ModelLoadError: the folder does not exist, or the hub id cannot be fetched; the
            message says how to point ``model`` at a local folder.
    """
    path = Path(os.fspath(model)).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a folder but has no config.json", source=str(path))
        return path
    text = os.fspath(model)
    looks_local = text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1)
    if looks_local or path.exists():
        raise ModelLoadError(
            f"model folder {text!r} does not exist (give a folder that holds config.json, "
            "tokenizer.json and the weights, or a Hugging Face hub id)",
            source=text,
        )
    try:
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(text, local_files_only=True)
        except Exception:
            folder = snapshot_download(text)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load model {text!r}: not in the local Hugging Face cache and the hub "
            f"could not be reached ({type(exc).__name__}). Download it where there is network "
            "(`hf download " + text + " --local-dir DIR`) and pass the folder: "
            "--model DIR (CLI) or model='DIR' (Python)",
            source=text,
        ) from exc
    return Path(folder)


def read_config(folder: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder."""
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read config.json: {exc}", source=str(folder)) from exc


def detect_family(config: dict[str, Any]) -> ModelFamily:
    """The model family of a checkpoint, from its config.

    Raises:
        ModelLoadError: the config is not a DeepSeek-OCR checkpoint this package reads.
    """
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    if model_type == "deepseek_ocr2":
        return ModelFamily.V2
    if model_type == "unlimited_ocr":
        return ModelFamily.V1
    if model_type == "deepseek_vl_v2":
        if _V1_ARCH in archs:
            return ModelFamily.V1
        if _V2_ARCH in archs:
            return ModelFamily.V2
    raise ModelLoadError(
        f"not a DeepSeek-OCR checkpoint (model_type={model_type!r}, architectures={archs!r}); "
        "expected deepseek-ai/DeepSeek-OCR (v1), deepseek-ai/DeepSeek-OCR-2 or "
        "deepseek-community/DeepSeek-OCR-2 (v2)"
    )


def _language_section(config: dict[str, Any]) -> dict[str, Any]:
    """The published ``language_config``, with the top-level LM keys as fallbacks."""
    lang = dict(config.get("language_config") or {})
    for key, value in config.items():  # the published file repeats the LM keys on top
        lang.setdefault(key, value)
    if lang.get("use_mla") or lang.get("kv_lora_rank"):
        raise ModelLoadError("this config uses multi-head latent attention; DeepSeek-OCR does not")
    return lang


def _text_config(lang: dict[str, Any]) -> dict[str, Any]:
    """The DeepSeek-V2 language model (plain multi-head attention) of a published config."""
    layers = int(lang["num_hidden_layers"])
    first_dense = int(lang.get("first_k_dense_replace", 1))
    return {
        "vocab_size": int(lang["vocab_size"]),
        "hidden_size": int(lang["hidden_size"]),
        "intermediate_size": int(lang["intermediate_size"]),
        "num_hidden_layers": layers,
        "num_attention_heads": int(lang["num_attention_heads"]),
        "num_key_value_heads": int(lang.get("num_key_value_heads") or lang["num_attention_heads"]),
        "moe_intermediate_size": int(lang["moe_intermediate_size"]),
        "n_routed_experts": int(lang["n_routed_experts"]),
        "n_shared_experts": int(lang.get("n_shared_experts") or 0),
        "num_experts_per_tok": int(lang["num_experts_per_tok"]),
        "topk_method": lang.get("topk_method", "greedy"),
        "n_group": lang.get("n_group", 1),
        "topk_group": lang.get("topk_group", 1),
        "routed_scaling_factor": float(lang.get("routed_scaling_factor", 1.0)),
        "max_position_embeddings": int(lang.get("max_position_embeddings", 8192)),
        "rms_norm_eps": float(lang.get("rms_norm_eps", 1e-6)),
        "hidden_act": lang.get("hidden_act", "silu"),
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": float(lang.get("rope_theta", 10000.0)),
        },
        "bos_token_id": lang.get("bos_token_id", 0),
        "eos_token_id": lang.get("eos_token_id", 1),
        "pad_token_id": lang.get("pad_token_id"),
        "mlp_layer_types": ["dense" if i < first_dense else "sparse" for i in range(layers)],
        "tie_word_embeddings": False,
    }


def _check_projector(config: dict[str, Any], want_in: int, hidden: int) -> None:
    proj = config.get("projector_config") or {}
    if not proj:
        return
    if int(proj.get("input_dim", want_in)) != want_in or int(proj.get("n_embed", hidden)) != hidden:
        raise ModelLoadError(
            f"projector_config {proj} does not fit the vision ({want_in}) and language "
            f"({hidden}) widths"
        )
    if proj.get("projector_type", "linear") != "linear":
        raise ModelLoadError(f"unsupported projector_type {proj.get('projector_type')!r}")


def translate_v1_config(config: dict[str, Any], *, image_token_id: int) -> Any:
    """Translate the published v1 ``config.json`` into an ``UnlimitedOcrConfig``.

    Args:
        config: The parsed config.json of ``deepseek-ai/DeepSeek-OCR`` (or a checkpoint in
            the same layout).
        image_token_id: The id of ``<image>`` in the checkpoint's tokenizer.

    Returns:
        A ``transformers.UnlimitedOcrConfig`` with full attention on every decoder layer.

    Raises:
        ModelLoadError: the config lacks a section, or uses a variant v1 never had (MLA).
    """
    from transformers import UnlimitedOcrConfig

    lang = _language_section(config)
    try:
        vision = config["vision_config"]
        widths = vision["width"]
        sam = widths["sam_vit_b"]
        clip = widths["clip-l-14-224"]
    except (KeyError, TypeError) as exc:
        raise ModelLoadError(f"v1 config.json lacks {exc}; is this DeepSeek-OCR?") from exc

    sam_width = int(sam["width"])
    downsample = [int(c) for c in sam.get("downsample_channels", (512, 1024))]
    clip_width = int(clip["width"])
    hidden = int(lang["hidden_size"])
    _check_projector(config, downsample[-1] + clip_width, hidden)
    if downsample[-1] != clip_width:
        raise ModelLoadError("the SAM output width must equal the CLIP width (v1 design)")

    text_config = _text_config(lang)
    layers = text_config["num_hidden_layers"]
    # v1 attends to the whole sequence on every layer; the validator still wants a window.
    text_config["layer_types"] = ["full_attention"] * layers
    text_config["sliding_window"] = 128
    vision_config = {
        "sam_config": {
            "hidden_size": sam_width,
            "num_hidden_layers": int(sam["layers"]),
            "num_attention_heads": int(sam["heads"]),
            "global_attn_indexes": [int(i) for i in sam["global_attn_indexes"]],
            "downsample_channels": downsample,
            "mlp_dim": int(sam.get("mlp_dim", 4 * sam_width)),
            "output_channels": int(sam.get("output_channels", 256)),
            "image_size": int(vision.get("image_size", 1024)),
            "patch_size": 16,
            "window_size": int(sam.get("window_size", 14)),
        },
        "encoder_config": {
            "hidden_size": clip_width,
            "intermediate_size": int(clip.get("intermediate_size", 4 * clip_width)),
            "num_hidden_layers": int(clip["layers"]),
            "num_attention_heads": int(clip["heads"]),
            "image_size": int(clip.get("image_size", 224)),
            "patch_size": int(clip.get("patch_size", 14)),
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
    }
    return UnlimitedOcrConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        tie_word_embeddings=False,
    )


_V2_ENCODER = {
    "layers": 24,
    "heads": 14,
    "kv_heads": 2,
    "intermediate_size": 4864,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
}
"""DeepSeek-OCR-2's Qwen2-style "decoder as encoder", as DeepSeek's code builds it.

``build_qwen2_decoder_as_encoder()`` in ``deepencoderv2/qwen2_d2e.py`` (and vLLM's
``deepencoder2.py``) fixes 24 layers, 14 heads, 2 key/value heads, intermediate 4864 and a
``Qwen2Config`` with ``rope_theta`` 1e6 and ``rms_norm_eps`` 1e-6; the published config.json
records only the width (``vision_config.width["qwen2-0-5b"].dim``, 896). A config may carry
the other sizes in that entry too (``layers``, ``heads``, ``kv_heads``,
``intermediate_size``, ``rope_theta``, ``rms_norm_eps``): the small test checkpoints do.
"""


def translate_v2_config(config: dict[str, Any], *, image_token_id: int) -> Any:
    """Translate the published v2 ``config.json`` into a ``DeepseekOcr2Config``.

    ``deepseek-ai/DeepSeek-OCR-2`` publishes the v1-style layout (``model_type:
    deepseek_vl_v2``, ``architectures: [DeepseekOCR2ForCausalLM]``). DeepSeek's code
    ignores most of its ``vision_config``: the SAM ViT-B reads its width, depth, heads and
    global-attention layers from ``sam_vit_b`` here, its last downsampling convolution
    outputs the encoder width (896: the published ``downsample_channels`` ``[512, 1024]``
    is a leftover of v1 that the v2 code never reads), and the Qwen2-style encoder has the
    fixed sizes of :data:`_V2_ENCODER` unless the config names others.

    Args:
        config: The parsed config.json of ``deepseek-ai/DeepSeek-OCR-2`` (or a checkpoint
            in the same layout).
        image_token_id: The id of ``<image>`` in the checkpoint's tokenizer.

    Returns:
        A ``transformers.DeepseekOcr2Config``.

    Raises:
        ModelLoadError: the config lacks a section, or uses a variant v2 never had (MLA).
    """
    from transformers import DeepseekOcr2Config

    lang = _language_section(config)
    try:
        vision = config["vision_config"]
        widths = vision["width"]
        sam = widths["sam_vit_b"]
        encoder = dict(_V2_ENCODER, **widths["qwen2-0-5b"])
        dim = int(encoder["dim"])
    except (KeyError, TypeError) as exc:
        raise ModelLoadError(f"v2 config.json lacks {exc}; is this DeepSeek-OCR-2?") from exc

    sam_width = int(sam["width"])
    downsample = [int(c) for c in sam.get("downsample_channels", (512, dim))]
    hidden = int(lang["hidden_size"])
    _check_projector(config, dim, hidden)
    vision_config = {
        "sam_config": {
            "hidden_size": sam_width,
            "num_hidden_layers": int(sam["layers"]),
            "num_attention_heads": int(sam["heads"]),
            "global_attn_indexes": [int(i) for i in sam["global_attn_indexes"]],
            "downsample_channels": [downsample[0], dim],
            "mlp_dim": int(sam.get("mlp_dim", 4 * sam_width)),
            "output_channels": int(sam.get("output_channels", 256)),
            "image_size": int(vision.get("image_size", 1024)),
            "patch_size": 16,
            "window_size": int(sam.get("window_size", 14)),
        },
        "encoder_config": {
            "hidden_size": dim,
            "intermediate_size": int(encoder["intermediate_size"]),
            "num_hidden_layers": int(encoder["layers"]),
            "num_attention_heads": int(encoder["heads"]),
            "num_key_value_heads": int(encoder["kv_heads"]),
            "hidden_act": "silu",
            "rms_norm_eps": float(encoder["rms_norm_eps"]),
            "rope_parameters": {"rope_type": "default", "rope_theta": float(encoder["rope_theta"])},
            "max_position_embeddings": 131072,
        },
    }
    return DeepseekOcr2Config(
        vision_config=vision_config,
        text_config=_text_config(lang),
        image_token_id=image_token_id,
        tie_word_embeddings=False,
    )


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the tokens the engine needs."""

    bos: int
    eos: int
    pad: int
    image: int


@dataclass
class LoadedModel:
    """A loaded checkpoint: the torch model, its tokenizer and what the engine needs."""

    model: Any
    tokenizer: Any  # tokenizers.Tokenizer
    family: ModelFamily
    special: SpecialTokens
    max_positions: int


def special_tokens(tok: Any, config_value: Callable[[str], Any], source: str) -> SpecialTokens:
    """The engine's special ids: from the tokenizer, else the config, else DeepSeek's.

    Args:
        tok: A ``tokenizers.Tokenizer``.
        config_value: Looks up ``bos_token_id`` / ``eos_token_id`` / ``pad_token_id`` in the
            checkpoint's config (``None`` when absent).
        source: What errors name.

    Raises:
        ModelLoadError: the tokenizer has no ``<image>`` token.
    """
    image = tok.token_to_id(IMAGE_TEXT)
    if image is None:
        raise ModelLoadError("the tokenizer has no <image> token", source=source)

    def pick(text: str, key: str, default: int) -> int:
        tid = tok.token_to_id(text)
        if tid is not None:
            return int(tid)
        value = config_value(key)
        return int(value) if isinstance(value, int) else default

    eos = pick(EOS_TEXT, "eos_token_id", 1)
    return SpecialTokens(
        bos=pick(BOS_TEXT, "bos_token_id", 0),
        eos=eos,
        pad=pick(PAD_TEXT, "pad_token_id", eos),
        image=int(image),
    )


def _load_tokenizer(folder: Path, config: dict[str, Any]) -> tuple[Any, SpecialTokens]:
    from tokenizers import Tokenizer

    file = folder / "tokenizer.json"
    if not file.is_file():
        raise ModelLoadError("the checkpoint has no tokenizer.json", source=str(folder))
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as exc:
        raise ModelLoadError(f"cannot read tokenizer.json: {exc}", source=str(folder)) from exc
    text_cfg = config.get("text_config") or config.get("language_config") or {}
    return tok, special_tokens(tok, lambda key: config.get(key, text_cfg.get(key)), str(folder))


def load_model(
    model: str | os.PathLike[str],
    *,
    device: str,
    dtype: Any,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load a DeepSeek-OCR checkpoint (v1 or v2 published layout, or v2 native) for inference.

    Args:
        model: A local folder or a Hugging Face hub id.
        device: A torch device string (``cuda``, ``cuda:1``, ``mps``, ``cpu``).
        dtype: The torch dtype for the weights.
        attn_implementation: ``sdpa`` (default) or ``eager``.

    Raises:
        ModelLoadError: anything that stops the checkpoint from loading completely: a
            missing weight, a weight the model does not use, a weight of the wrong shape.
    """
    import torch

    folder = resolve_model_path(model)
    config = read_config(folder)
    family = detect_family(config)
    tokenizer, special = _load_tokenizer(folder, config)
    kwargs: dict[str, Any] = {"dtype": dtype, "output_loading_info": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        if family is ModelFamily.V1:
            from transformers import UnlimitedOcrConfig, UnlimitedOcrForConditionalGeneration

            if config.get("model_type") == "unlimited_ocr":
                cfg = UnlimitedOcrConfig.from_pretrained(folder)
            else:
                cfg = translate_v1_config(config, image_token_id=special.image)
            net, info = UnlimitedOcrForConditionalGeneration.from_pretrained(
                folder, config=cfg, **kwargs
            )
        else:
            from transformers import DeepseekOcr2ForConditionalGeneration

            if config.get("model_type") == "deepseek_vl_v2":
                kwargs["config"] = translate_v2_config(config, image_token_id=special.image)
            net, info = DeepseekOcr2ForConditionalGeneration.from_pretrained(folder, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the weights: {type(exc).__name__}: {exc}", source=str(folder)
        ) from exc
    missing = [k for k in info.get("missing_keys", ()) if "lm_head" not in k or _lm_untied(net)]
    if missing:
        shown = ", ".join(sorted(missing)[:5])
        raise ModelLoadError(
            f"the checkpoint lacks {len(missing)} weight(s) the model needs ({shown} ...)",
            source=str(folder),
        )
    unused = sorted(info.get("unexpected_keys", ()))
    if unused:
        shown = ", ".join(unused[:5])
        raise ModelLoadError(
            f"the checkpoint holds {len(unused)} weight(s) the model does not use ({shown} ...): "
            "its layout does not match the architecture",
            source=str(folder),
        )
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if mismatched:
        raise ModelLoadError(
            f"{len(mismatched)} weight(s) have the wrong shape ({', '.join(mismatched[:5])} ...)",
            source=str(folder),
        )
    if int(net.config.image_token_id) != special.image:
        raise ModelLoadError(
            f"config image_token_id {net.config.image_token_id} differs from the tokenizer's "
            f"<image> id {special.image}",
            source=str(folder),
        )
    try:
        net = net.to(torch.device(device)).eval()
    except Exception as exc:
        raise ConfigurationError(f"cannot move the model to device {device!r}: {exc}") from exc
    net.requires_grad_(False)
    text_cfg = net.config.text_config
    return LoadedModel(
        model=net,
        tokenizer=tokenizer,
        family=family,
        special=special,
        max_positions=int(getattr(text_cfg, "max_position_embeddings", 8192)),
    )


def _lm_untied(net: Any) -> bool:
    return not bool(getattr(net.config, "tie_word_embeddings", False))
