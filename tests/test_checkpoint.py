"""Checkpoint layouts and loading: the tiny models go through a real checkpoint's path."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from langchain_deepseek_ocr import ModelFamily, ModelLoadError
from langchain_deepseek_ocr._checkpoint import (
    detect_family,
    load_model,
    resolve_model_path,
    translate_v1_config,
)

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "v1-checkpoint"


def _published_names() -> set[str]:
    """Tensor names of the real v1 checkpoint, with index ranges collapsed to '#'."""
    text = (REFERENCE / "tensors.md").read_text(encoding="utf-8")
    names = set()
    for name in re.findall(r"^\| `([^`]+)` \|", text, flags=re.M):
        if name == "name":
            continue
        names.add(re.sub(r"\.\d+(-\d+)?(?=\.)", ".#", name))
    return names


def _collapse(name: str) -> str:
    return re.sub(r"\.\d+(?=\.)", ".#", name)


def test_reference_files_are_present():
    assert (REFERENCE / "tensors.md").is_file(), f"missing {REFERENCE}/tensors.md"
    assert len(_published_names()) > 60


def test_tiny_v1_has_the_published_layout(tiny_v1_dir):
    config = json.loads((tiny_v1_dir / "config.json").read_text())
    real = json.loads((REFERENCE / "config.json").read_text())
    assert config["model_type"] == real["model_type"] == "deepseek_vl_v2"
    assert config["architectures"] == real["architectures"] == ["DeepseekOCRForCausalLM"]
    assert set(config) == set(real)
    assert set(config["language_config"]) == set(real["language_config"])
    assert set(config["vision_config"]["width"]) == set(real["vision_config"]["width"])
    with safe_open(str(tiny_v1_dir / "model.safetensors"), "pt") as f:
        names = {_collapse(k) for k in f.keys()}  # noqa: SIM118
    assert names == _published_names()


def test_the_real_v1_config_translates_to_the_full_size_model():
    real = json.loads((REFERENCE / "config.json").read_text())
    cfg = translate_v1_config(real, image_token_id=128815)
    text = cfg.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (1280, 12, 10)
    assert (text.n_routed_experts, text.num_experts_per_tok, text.n_shared_experts) == (64, 6, 2)
    assert text.layer_types == ["full_attention"] * 12
    assert text.mlp_layer_types == ["dense"] + ["sparse"] * 11
    assert text.vocab_size == 129280
    assert text.max_position_embeddings == 8192
    sam = cfg.vision_config.sam_config
    assert (sam.hidden_size, sam.num_hidden_layers, list(sam.downsample_channels)) == (
        768,
        12,
        [512, 1024],
    )
    assert list(sam.global_attn_indexes) == [2, 5, 8, 11]
    clip = cfg.vision_config.encoder_config
    assert (clip.hidden_size, clip.num_hidden_layers, clip.num_attention_heads) == (1024, 24, 16)
    assert cfg.image_token_id == 128815


def test_family_detection():
    real = json.loads((REFERENCE / "config.json").read_text())
    assert detect_family(real) is ModelFamily.V1
    assert detect_family({"model_type": "deepseek_ocr2"}) is ModelFamily.V2
    assert detect_family({"model_type": "unlimited_ocr"}) is ModelFamily.V1
    # DeepSeek-OCR-2 as published (deepseek-ai/DeepSeek-OCR-2) is read too
    assert (
        detect_family(
            {"model_type": "deepseek_vl_v2", "architectures": ["DeepseekOCR2ForCausalLM"]}
        )
        is ModelFamily.V2
    )
    with pytest.raises(ModelLoadError, match="not a DeepSeek-OCR checkpoint"):
        detect_family({"model_type": "llama"})


def test_v1_weights_are_renamed_into_the_native_model(tiny_v1_dir):
    loaded = load_model(tiny_v1_dir, device="cpu", dtype=torch.float32)
    assert loaded.family is ModelFamily.V1
    net = loaded.model
    state = net.state_dict()
    with safe_open(str(tiny_v1_dir / "model.safetensors"), "pt") as f:
        torch.testing.assert_close(
            state["model.vision_tower.sam_encoder.pos_embed"],
            f.get_tensor("model.sam_model.pos_embed"),
        )
        torch.testing.assert_close(state["lm_head.weight"], f.get_tensor("lm_head.weight"))
        torch.testing.assert_close(
            state["model.view_separator"], f.get_tensor("model.view_seperator")
        )
        qkv = f.get_tensor("model.vision_model.transformer.layers.0.self_attn.qkv_proj.weight")
        q, k, v = qkv.chunk(3, dim=0)
        prefix = "model.vision_tower.vision_encoder.encoder.layers.0.self_attn."
        torch.testing.assert_close(state[prefix + "q_proj.weight"], q)
        torch.testing.assert_close(state[prefix + "k_proj.weight"], k)
        torch.testing.assert_close(state[prefix + "v_proj.weight"], v)
        gate_up = state["model.language_model.layers.1.mlp.experts.gate_up_proj"]
        gate0 = f.get_tensor("model.layers.1.mlp.experts.0.gate_proj.weight")
        up0 = f.get_tensor("model.layers.1.mlp.experts.0.up_proj.weight")
        torch.testing.assert_close(gate_up[0], torch.cat([gate0, up0], dim=0))
        torch.testing.assert_close(
            state["model.multi_modal_projector.weight"],
            f.get_tensor("model.projector.layers.weight"),
        )
    assert loaded.special.image == loaded.tokenizer.token_to_id("<image>")


def test_v2_native_checkpoint_loads(tiny_v2_dir):
    loaded = load_model(tiny_v2_dir, device="cpu", dtype=torch.float32)
    assert loaded.family is ModelFamily.V2
    assert type(loaded.model).__name__ == "DeepseekOcr2ForConditionalGeneration"


def test_missing_weights_are_a_load_error(tiny_v1_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_v1_dir / name).read_bytes())
    weights = load_file(str(tiny_v1_dir / "model.safetensors"))
    del weights["model.sam_model.pos_embed"]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="lacks"):
        load_model(broken, device="cpu", dtype=torch.float32)


def test_bad_locations(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_path(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_model_path(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="--model DIR"):
        resolve_model_path("some-org/not-a-cached-model")
