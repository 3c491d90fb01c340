"""DeepSeek-OCR-2 in its published (original) layout: config translation and weight renaming.

``deepseek-ai/DeepSeek-OCR-2`` ships ``model_type: deepseek_vl_v2`` with
``architectures: [DeepseekOCR2ForCausalLM]`` and DeepSeek's own tensor names
(``model.sam_model.*``, ``model.qwen2_model.model.model.*``, ``model.projector.layers.*``,
``model.view_seperator``, ``model.layers.*``). The loader translates the config into a
``DeepseekOcr2Config`` and lets transformers rename the weights. These tests use a tiny
checkpoint in that layout (small vision tower and language model, real geometry) and check
that every tensor lands where it should, and that nothing is missing or left over.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import noise_image
from langchain_deepseek_ocr import ModelFamily, ModelLoadError, TransformersEngine
from langchain_deepseek_ocr._checkpoint import detect_family, load_model, translate_v2_config
from langchain_deepseek_ocr._engine import OCRRequest
from langchain_deepseek_ocr.testing._vllm import (
    V2_PUBLISHED_TENSORS,
    build_tiny_v2_published,
    collapse_tensor_name,
    vllm_checkpoint_config,
)

# The published config.json of deepseek-ai/DeepSeek-OCR-2 (a byte-level copy with
# "_name_or_path": "deepseek-ai/DeepSeek-OCR-2" in the public GitHub repository
# sen-ye/DeepSeek-OCR2-query-ablation). The language keys are repeated at the top level.
_LANG = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration_deepseekv2.DeepseekV2Config",
        "AutoModel": "modeling_deepseek.DeepseekV2Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM",
    },
    "bos_token_id": 0,
    "eos_token_id": 1,
    "first_k_dense_replace": 1,
    "hidden_size": 1280,
    "intermediate_size": 6848,
    "kv_lora_rank": None,
    "lm_head": True,
    "max_position_embeddings": 8192,
    "moe_intermediate_size": 896,
    "n_group": 1,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "num_attention_heads": 10,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 12,
    "num_key_value_heads": 10,
    "q_lora_rank": None,
    "qk_nope_head_dim": 0,
    "qk_rope_head_dim": 0,
    "rm_head": False,
    "topk_group": 1,
    "topk_method": "greedy",
    "torch_dtype": "bfloat16",
    "use_mla": False,
    "v_head_dim": 0,
    "vocab_size": 129280,
}
REAL_V2_CONFIG = {
    "_name_or_path": "deepseek-ai/DeepSeek-OCR-2",
    "candidate_resolutions": [[1024, 1024]],
    "global_view_pos": "head",
    "architectures": ["DeepseekOCR2ForCausalLM"],
    "auto_map": {
        "AutoConfig": "modeling_deepseekocr2.DeepseekOCR2Config",
        "AutoModel": "modeling_deepseekocr2.DeepseekOCR2ForCausalLM",
    },
    "language_config": _LANG,
    "model_type": "deepseek_vl_v2",
    "projector_config": {
        "input_dim": 896,
        "model_type": "mlp_projector",
        "n_embed": 1280,
        "projector_type": "linear",
    },
    "tile_tag": "2D",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3",
    "vision_config": {
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
    },
    **{k: v for k, v in _LANG.items() if k not in ("architectures", "auto_map", "torch_dtype")},
}


@pytest.fixture(scope="module")
def v2_published_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_v2_published(tmp_path_factory.mktemp("tiny-v2-published"))


@pytest.fixture(scope="module")
def v2_published(v2_published_dir: Path):
    return load_model(v2_published_dir, device="cpu", dtype=torch.float32)


def _copy_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_tiny_v2_has_the_published_layout(v2_published_dir):
    config = json.loads((v2_published_dir / "config.json").read_text())
    assert config["model_type"] == "deepseek_vl_v2"
    assert config["architectures"] == ["DeepseekOCR2ForCausalLM"]
    assert set(config) == set(REAL_V2_CONFIG)
    assert set(config["language_config"]) == set(_LANG)
    assert set(config["vision_config"]["width"]) == {"qwen2-0-5b", "sam_vit_b"}
    with safe_open(str(v2_published_dir / "model.safetensors"), "pt") as f:
        names = {collapse_tensor_name(k) for k in f.keys()}  # noqa: SIM118
    assert names == V2_PUBLISHED_TENSORS
    assert len(V2_PUBLISHED_TENSORS) == 58


def test_the_vllm_parity_config_has_the_published_v2_vision_config():
    config = vllm_checkpoint_config("v2")
    assert config["vision_config"] == REAL_V2_CONFIG["vision_config"]
    assert config["projector_config"]["input_dim"] == 896


def test_the_published_v2_layout_is_detected():
    assert detect_family(REAL_V2_CONFIG) is ModelFamily.V2


def test_the_real_v2_config_translates_to_the_full_size_model():
    cfg = translate_v2_config(REAL_V2_CONFIG, image_token_id=128815)
    assert cfg.model_type == "deepseek_ocr2"
    assert cfg.image_token_id == 128815
    text = cfg.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (1280, 12, 10)
    assert (text.n_routed_experts, text.num_experts_per_tok, text.n_shared_experts) == (64, 6, 2)
    assert (text.intermediate_size, text.moe_intermediate_size) == (6848, 896)
    assert text.mlp_layer_types == ["dense"] + ["sparse"] * 11
    assert text.vocab_size == 129280
    assert text.rope_parameters["rope_theta"] == 10000.0
    sam = cfg.vision_config.sam_config
    assert (sam.hidden_size, sam.num_hidden_layers, sam.num_attention_heads) == (768, 12, 12)
    assert list(sam.global_attn_indexes) == [2, 5, 8, 11]
    # DeepSeek's v2 SAM ends in 896 channels (vLLM: last_conv_output=896), not the
    # [512, 1024] the published config still lists from v1
    assert list(sam.downsample_channels) == [512, 896]
    assert (sam.output_channels, sam.mlp_dim, sam.window_size) == (256, 3072, 14)
    enc = cfg.vision_config.encoder_config
    assert (enc.hidden_size, enc.num_hidden_layers, enc.intermediate_size) == (896, 24, 4864)
    assert (enc.num_attention_heads, enc.num_key_value_heads) == (14, 2)
    assert enc.rope_parameters["rope_theta"] == 1_000_000.0
    assert enc.rms_norm_eps == 1e-6


def test_the_full_size_v2_model_has_the_shapes_deepseek_builds():
    from transformers import DeepseekOcr2ForConditionalGeneration

    cfg = translate_v2_config(REAL_V2_CONFIG, image_token_id=128815)
    with torch.device("meta"):
        net = DeepseekOcr2ForConditionalGeneration(cfg)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    tower = "model.vision_tower."
    assert shapes[tower + "query_768_resolution.weight"] == (144, 896)
    assert shapes[tower + "query_1024_resolution.weight"] == (256, 896)
    assert shapes[tower + "sam_encoder.pos_embed"] == (1, 64, 64, 768)
    assert shapes[tower + "sam_encoder.proj.conv1.weight"] == (512, 256, 3, 3)
    assert shapes[tower + "sam_encoder.proj.conv2.weight"] == (896, 512, 3, 3)
    layer = tower + "vision_encoder.layers.23.self_attn."
    assert shapes[layer + "q_proj.weight"] == (896, 896)
    assert shapes[layer + "k_proj.weight"] == (128, 896)
    assert shapes[layer + "k_proj.bias"] == (128,)
    assert shapes[tower + "vision_encoder.layers.23.mlp.gate_proj.weight"] == (4864, 896)
    assert tower + "vision_encoder.layers.24.mlp.gate_proj.weight" not in shapes
    assert shapes["model.multi_modal_projector.weight"] == (1280, 896)
    assert shapes["model.view_separator"] == (1280,)
    assert shapes["lm_head.weight"] == (129280, 1280)


def test_v2_weights_land_in_the_native_model(v2_published_dir, v2_published):
    assert v2_published.family is ModelFamily.V2
    net = v2_published.model
    assert type(net).__name__ == "DeepseekOcr2ForConditionalGeneration"
    state = net.state_dict()
    tower = "model.vision_tower."
    qwen = "model.qwen2_model.model.model."
    pairs = {
        tower + "sam_encoder.pos_embed": "model.sam_model.pos_embed",
        tower + "sam_encoder.patch_embed.projection.weight": (
            "model.sam_model.patch_embed.proj.weight"
        ),
        tower + "sam_encoder.layers.0.layer_norm1.weight": "model.sam_model.blocks.0.norm1.weight",
        tower + "sam_encoder.layers.1.attn.qkv.weight": "model.sam_model.blocks.1.attn.qkv.weight",
        tower + "sam_encoder.layers.1.attn.rel_pos_h": "model.sam_model.blocks.1.attn.rel_pos_h",
        tower + "sam_encoder.layers.0.mlp.lin2.bias": "model.sam_model.blocks.0.mlp.lin2.bias",
        tower + "sam_encoder.neck.conv1.weight": "model.sam_model.neck.0.weight",
        tower + "sam_encoder.neck.layer_norm2.bias": "model.sam_model.neck.3.bias",
        tower + "sam_encoder.proj.conv1.weight": "model.sam_model.net_2.weight",
        tower + "sam_encoder.proj.conv2.weight": "model.sam_model.net_3.weight",
        tower + "vision_encoder.layers.1.self_attn.q_proj.weight": (
            qwen + "layers.1.self_attn.q_proj.weight"
        ),
        tower + "vision_encoder.layers.1.self_attn.k_proj.bias": (
            qwen + "layers.1.self_attn.k_proj.bias"
        ),
        tower + "vision_encoder.layers.0.mlp.down_proj.weight": (
            qwen + "layers.0.mlp.down_proj.weight"
        ),
        tower + "vision_encoder.layers.0.post_attention_layernorm.weight": (
            qwen + "layers.0.post_attention_layernorm.weight"
        ),
        tower + "vision_encoder.norm.weight": qwen + "norm.weight",
        tower + "query_768_resolution.weight": "model.qwen2_model.query_768.weight",
        tower + "query_1024_resolution.weight": "model.qwen2_model.query_1024.weight",
        "model.multi_modal_projector.weight": "model.projector.layers.weight",
        "model.multi_modal_projector.bias": "model.projector.layers.bias",
        "model.view_separator": "model.view_seperator",
        "model.language_model.embed_tokens.weight": "model.embed_tokens.weight",
        "model.language_model.layers.0.mlp.gate_proj.weight": "model.layers.0.mlp.gate_proj.weight",
        "model.language_model.layers.1.self_attn.o_proj.weight": (
            "model.layers.1.self_attn.o_proj.weight"
        ),
        "model.language_model.layers.1.mlp.gate.weight": "model.layers.1.mlp.gate.weight",
        "model.language_model.layers.1.mlp.shared_experts.up_proj.weight": (
            "model.layers.1.mlp.shared_experts.up_proj.weight"
        ),
        "model.language_model.norm.weight": "model.norm.weight",
        "lm_head.weight": "lm_head.weight",
    }
    with safe_open(str(v2_published_dir / "model.safetensors"), "pt") as f:
        for native, original in pairs.items():
            torch.testing.assert_close(state[native], f.get_tensor(original), msg=native)
        experts = net.config.text_config.n_routed_experts
        gate_up = state["model.language_model.layers.1.mlp.experts.gate_up_proj"]
        down = state["model.language_model.layers.1.mlp.experts.down_proj"]
        assert gate_up.shape[0] == down.shape[0] == experts
        for e in range(experts):
            gate = f.get_tensor(f"model.layers.1.mlp.experts.{e}.gate_proj.weight")
            up = f.get_tensor(f"model.layers.1.mlp.experts.{e}.up_proj.weight")
            torch.testing.assert_close(gate_up[e], torch.cat([gate, up], dim=0))
            torch.testing.assert_close(
                down[e], f.get_tensor(f"model.layers.1.mlp.experts.{e}.down_proj.weight")
            )
    assert v2_published.special.image == v2_published.tokenizer.token_to_id("<image>")
    assert net.config.image_token_id == v2_published.special.image


def test_every_v2_tensor_is_used(v2_published_dir, v2_published):
    """Parameter counts match: no tensor of the file is dropped, none of the model is new."""
    weights = load_file(str(v2_published_dir / "model.safetensors"))
    in_file = sum(t.numel() for t in weights.values())
    in_model = sum(p.numel() for p in v2_published.model.parameters())
    assert in_file == in_model


def test_the_engine_runs_on_the_published_v2_layout(v2_published_dir):
    engine = TransformersEngine(str(v2_published_dir), device="cpu", max_new_tokens=4)
    small, page = noise_image(320, 200, seed=3), noise_image(1191, 1684, seed=4)
    results = engine.generate(
        [OCRRequest(image=small, prompt="Free OCR."), OCRRequest(image=page, prompt="Free OCR.")]
    )
    assert [type(r).__name__ for r in results] == ["EngineOutput", "EngineOutput"]
    assert [r.vision_tokens for r in results] == [257, 256 + 1 + 6 * 144]
    assert all(r.output_tokens >= 1 for r in results)
    assert engine.family is ModelFamily.V2


def test_a_tensor_the_model_does_not_use_is_a_load_error(v2_published_dir, tmp_path):
    broken = _copy_without_weights(v2_published_dir, tmp_path / "extra")
    weights = load_file(str(v2_published_dir / "model.safetensors"))
    weights["model.image_newline"] = torch.zeros(64)  # a v1 tensor v2 does not have
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"does not use \(model\.image_newline"):
        load_model(broken, device="cpu", dtype=torch.float32)


def test_a_missing_v2_tensor_is_a_load_error(v2_published_dir, tmp_path):
    broken = _copy_without_weights(v2_published_dir, tmp_path / "missing")
    weights = load_file(str(v2_published_dir / "model.safetensors"))
    del weights["model.qwen2_model.query_768.weight"]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="lacks"):
        load_model(broken, device="cpu", dtype=torch.float32)


def test_a_v2_config_without_its_vision_widths_is_a_load_error():
    config = json.loads(json.dumps(REAL_V2_CONFIG))
    del config["vision_config"]["width"]["qwen2-0-5b"]
    with pytest.raises(ModelLoadError, match="qwen2-0-5b"):
        translate_v2_config(config, image_token_id=128815)
    config = json.loads(json.dumps(REAL_V2_CONFIG))
    config["projector_config"]["input_dim"] = 1024
    with pytest.raises(ModelLoadError, match="projector_config"):
        translate_v2_config(config, image_token_id=128815)
