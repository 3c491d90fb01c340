"""GPU throughput of the local engine on full-size random-weight DeepSeek-OCR models.

Builds v1 (the sizes of the published ``deepseek-ai/DeepSeek-OCR`` config.json, embedded
below) and v2 (DeepSeek-OCR-2's sizes) directly on the GPU in bf16 -- no checkpoint on disk
-- with a tokenizer of the real vocabulary (129,280 ids, special tokens at their real ids),
injects them into a :class:`TransformersEngine` (``TransformersEngine.from_model``) and
measures pages/s for A4 pages at batch 1, 8 and 32 with 1,000 forced output tokens per
page (``min_new_tokens = max_new_tokens``), the n-gram guard on (the engine's default),
plus peak GPU memory (``torch.cuda.max_memory_allocated``).

Modes: v1 base (273 image tokens per A4 page), v1 gundam (903), v2 gundam (1121).

    python bench/gpu.py                 # the full run (~6 min on an H200; hard budget inside)
    python bench/gpu.py --quick         # fewer pages per point (~3 min)
    python bench/gpu.py --cpu-smoke     # shrunken models on the CPU: proves the script works

Prints a table; with ``$OUT`` set (or ``--json PATH``) writes the numbers as JSON, rewritten
after every point so a run cut short still leaves what it measured. Points run in order of
importance (v1 base at batch 32 first) and a point that would overrun ``--budget`` seconds
is shrunk to one batch or skipped (and marked so): one run always ends in time.

Runs from a source checkout without installing the package (``src`` is put on the path); on
a machine without ``langchain_core`` the engine modules are loaded without the package's
``__init__`` (which imports the LangChain facade), so only transformers, torch, tokenizers,
numpy, Pillow and pydantic are needed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# The published deepseek-ai/DeepSeek-OCR config.json (v1), as downloaded: the sizes that
# matter for speed and memory (the shared reference copy does not travel to GPU machines).
# Its vision_config is the package's PUBLISHED_V1_VISION_CONFIG (added in v1_config).
V1_PUBLISHED_CONFIG: dict[str, Any] = {
    "_name_or_path": "deepseek-ai/DeepSeek-OCR",
    "candidate_resolutions": [[1024, 1024]],
    "global_view_pos": "head",
    "architectures": ["DeepseekOCRForCausalLM"],
    "language_config": {
        "architectures": ["DeepseekV2ForCausalLM"],
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
    },
    "model_type": "deepseek_vl_v2",
    "projector_config": {
        "input_dim": 2048,
        "model_type": "mlp_projector",
        "n_embed": 1280,
        "projector_type": "linear",
    },
    "tile_tag": "2D",
    "torch_dtype": "bfloat16",
}

IMAGE_TOKEN_ID = 128815
A4 = (1191, 1684)  # an A4 page rendered at 144 dpi, as DeepSeek's PDF script does

# (family, resolution, batch, extra) in order of importance: the goal metric first. An extra
# point (beyond the required batch 1 / 8 / 32) runs only while more than EXTRA_RESERVE_S
# seconds of the budget are left, as one batch.
POINTS = [
    ("v1", "base", 32, False),
    ("v1", "base", 64, True),
    ("v1", "gundam", 32, False),
    ("v1", "base", 8, False),
    ("v1", "gundam", 8, False),
    ("v1", "base", 1, False),
    ("v1", "gundam", 1, False),
    ("v2", "gundam", 32, False),
    ("v2", "gundam", 8, False),
    ("v2", "gundam", 1, False),
]
EXTRA_RESERVE_S = 270.0


# -- importing the package from the checkout ---------------------------------------------


def _import_package() -> types.ModuleType:
    """``langchain_deepseek_ocr`` from ``src``; without LangChain, its engine modules only."""
    src = ROOT / "src"
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    if importlib.util.find_spec("langchain_core") is not None:
        return importlib.import_module("langchain_deepseek_ocr")
    # No LangChain on this machine (GPU images): register the package without running its
    # __init__ (which imports the facade); the engine, preprocessing and testing modules
    # import only transformers, torch, tokenizers, numpy, Pillow and pydantic.
    package = types.ModuleType("langchain_deepseek_ocr")
    package.__path__ = [str(src / "langchain_deepseek_ocr")]
    sys.modules["langchain_deepseek_ocr"] = package
    return package


_import_package()

from langchain_deepseek_ocr._checkpoint import (  # noqa: E402
    translate_v1_config,
    translate_v2_config,
)
from langchain_deepseek_ocr._engine import EngineOutput, OCRRequest  # noqa: E402
from langchain_deepseek_ocr._tasks import Resolution, build_prompt  # noqa: E402
from langchain_deepseek_ocr._transformers_engine import (  # noqa: E402
    TransformersEngine,
    _quiet_transformers,
)
from langchain_deepseek_ocr.testing._vllm import (  # noqa: E402
    PUBLISHED_V1_VISION_CONFIG,
    PUBLISHED_V2_VISION_CONFIG,
    build_real_vocab_tokenizer,
)

# -- models --------------------------------------------------------------------------------


def _shrink_language(config: dict[str, Any]) -> None:
    """The smoke run's decoder: the published layout, tiny sizes."""
    config["language_config"].update(
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        n_routed_experts=8,
        num_experts_per_tok=2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    config["projector_config"]["n_embed"] = 64


def v1_config(*, smoke: bool) -> Any:
    """The v1 ``UnlimitedOcrConfig``: published sizes, or shrunk for the CPU smoke run."""
    config = copy.deepcopy(V1_PUBLISHED_CONFIG)
    config["vision_config"] = copy.deepcopy(PUBLISHED_V1_VISION_CONFIG)
    if smoke:
        _shrink_language(config)
        widths = config["vision_config"]["width"]
        widths["clip-l-14-224"].update(heads=2, layers=2, width=32)
        widths["sam_vit_b"].update(
            downsample_channels=[16, 32], global_attn_indexes=[1], heads=2, layers=2, width=32
        )
        config["projector_config"]["input_dim"] = 64
    return translate_v1_config(config, image_token_id=IMAGE_TOKEN_ID)


def v2_config(*, smoke: bool) -> Any:
    """The v2 ``DeepseekOcr2Config``: DeepSeek-OCR-2's sizes, or shrunk for the smoke run.

    DeepSeek-OCR-2 publishes v1's decoder with its own vision config; the model is built
    from that through the loader's own translation (encoder sizes DeepSeek's code fixes).
    """
    config = copy.deepcopy(V1_PUBLISHED_CONFIG)
    config["architectures"] = ["DeepseekOCR2ForCausalLM"]
    config["vision_config"] = copy.deepcopy(PUBLISHED_V2_VISION_CONFIG)
    config["projector_config"]["input_dim"] = 896
    if smoke:
        _shrink_language(config)
        widths = config["vision_config"]["width"]
        widths["sam_vit_b"].update(
            downsample_channels=[16, 32],
            global_attn_indexes=[1],
            heads=2,
            layers=2,
            width=32,
            output_channels=16,
        )
        widths["qwen2-0-5b"].update(dim=32, layers=2, heads=2, kv_heads=2, intermediate_size=64)
        config["projector_config"]["input_dim"] = 32
    return translate_v2_config(config, image_token_id=IMAGE_TOKEN_ID)


def build_model(family: str, *, smoke: bool, device: Any, dtype: Any, seed: int = 0) -> Any:
    """A random-weight model built directly on ``device`` in ``dtype`` (no disk, no CPU copy)."""
    import torch
    from transformers import (
        DeepseekOcr2ForConditionalGeneration,
        UnlimitedOcrForConditionalGeneration,
    )

    if family == "v1":
        cls, config = UnlimitedOcrForConditionalGeneration, v1_config(smoke=smoke)
    else:
        cls, config = DeepseekOcr2ForConditionalGeneration, v2_config(smoke=smoke)
    with _quiet_transformers(), torch.device(device):
        model = cls._from_config(config, dtype=dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.dtype.is_floating_point:
                continue
            if param.dim() == 1 and ("norm" in name or name.endswith(("ln.weight", "ln_1.weight"))):
                param.fill_(1.0)  # norms at identity: activations keep a sane scale
            else:
                param.normal_(0.0, 0.02 if param.dim() > 1 else 0.01, generator=gen)
    return model.eval()


def real_vocab_tokenizer(folder: Path) -> Any:
    """A tokenizer with the real vocabulary size and special-token ids."""
    tok = build_real_vocab_tokenizer(folder)
    assert tok.get_vocab_size() == 129280
    assert tok.token_to_id("<image>") == IMAGE_TOKEN_ID
    assert tok.token_to_id("<td>") == 128821
    assert tok.token_to_id("</td>") == 128822
    return tok


def a4_pages(count: int) -> list[Any]:
    import numpy as np
    from PIL import Image

    pages = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 256, (A4[1], A4[0], 3), dtype=np.uint8)
        pages.append(Image.fromarray(pixels, "RGB"))
    return pages


# -- measuring -----------------------------------------------------------------------------


class Clock:
    """Wall time that counts only when the device has finished its work."""

    def __init__(self, device: Any):
        import torch

        self.cuda = str(device).startswith("cuda")
        self.torch = torch

    def now(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
        return time.perf_counter()


def measure_preprocess(pages: list[Any], device: Any, clock: Clock) -> dict[str, Any]:
    """ms per A4 page: PIL on the CPU vs the CPU's share and the device part of resizing there.

    The device path (``defer_resize``) must give the very tensors of the PIL path; that is
    checked here too, on the GPU's own arithmetic.
    """
    import torch

    from langchain_deepseek_ocr._preprocess import pixel_batch, prepare_image
    from langchain_deepseek_ocr._resample import matches_installed_pillow
    from langchain_deepseek_ocr._tasks import resolution_spec

    out: dict[str, Any] = {"pillow_probe_ok": matches_installed_pillow()}
    reps = 3 if device.type == "cpu" else 8
    for family in ("v1", "v2"):
        spec = resolution_spec(family, "gundam")
        page = pages[0]
        pixel_batch([prepare_image(page, spec, defer_resize=True)], device=device)  # warm-up
        start = time.perf_counter()
        for _ in range(reps):
            on_cpu = prepare_image(page, spec)
        pil_ms = (time.perf_counter() - start) / reps * 1000
        start = time.perf_counter()
        for _ in range(reps):
            deferred = prepare_image(page, spec, defer_resize=True)
        share_ms = (time.perf_counter() - start) / reps * 1000
        start = clock.now()
        for _ in range(reps):
            got = pixel_batch([deferred], device=device, dtype=torch.bfloat16)
        device_ms = (clock.now() - start) / reps * 1000
        want = pixel_batch([on_cpu], device=device, dtype=torch.bfloat16)
        same = bool(torch.equal(got.pixel_values, want.pixel_values)) and bool(
            torch.equal(got.pixel_values_local, want.pixel_values_local)
        )
        out[family] = {
            "pil_resizes_cpu_ms": round(pil_ms, 2),
            "device_path_cpu_share_ms": round(share_ms, 2),
            "device_path_device_ms_incl_upload": round(device_ms, 2),
            "same_tensors": same,
        }
    return out


def run_engine(
    model: Any,
    tok: Any,
    *,
    name: str,
    resolution: str,
    batch: int,
    tokens: int,
    pages: list[Any],
    clock: Clock,
) -> tuple[float, list[Any]]:
    engine = TransformersEngine.from_model(
        model,
        tok,
        name=name,
        batch_size=batch,
        max_new_tokens=tokens,
        resolution=resolution,
        generate_kwargs={"min_new_tokens": tokens},
    )
    prompt = build_prompt("markdown")
    requests = [
        OCRRequest(image=page, prompt=prompt, resolution=Resolution(resolution)) for page in pages
    ]
    start = clock.now()
    outputs = engine.generate(requests)
    seconds = clock.now() - start
    engine.close()
    return seconds, outputs


def measure_point(
    model: Any,
    tok: Any,
    *,
    family: str,
    resolution: str,
    batch: int,
    tokens: int,
    batches: int,
    pages: list[Any],
    clock: Clock,
    deadline: float,
) -> dict[str, Any]:
    """One (model, mode, batch) point: probe, project, then the timed run (or a skip)."""
    import torch

    row: dict[str, Any] = {
        "family": family,
        "resolution": resolution,
        "batch": batch,
        "tokens_per_page": tokens,
    }
    name = f"random-{family}"
    cuda = clock.cuda
    # probes: one batch with 1 and with 17 output tokens -> prefill time and time per step
    first, outs = run_engine(
        model, tok, name=name, resolution=resolution, batch=batch, tokens=1,
        pages=pages[:batch], clock=clock,
    )  # fmt: skip
    failed = [o for o in outs if not isinstance(o, EngineOutput)]
    if failed:  # e.g. out of memory: do not let the engine's page-by-page retry eat the budget
        row["status"] = f"probe failed: {str(failed[0])[:300]}"
        return row
    probe, _ = run_engine(
        model, tok, name=name, resolution=resolution, batch=batch, tokens=17,
        pages=pages[:batch], clock=clock,
    )  # fmt: skip
    step = max(probe - first, 0.0) / 16
    row["prefill_s"] = round(first, 4)
    row["step_ms"] = round(step * 1000, 3)
    per_batch = first + tokens * step
    left = deadline - time.monotonic()
    if batches * per_batch * 1.15 > left:
        batches = 1
        row["note"] = "shrunk to one batch by the time budget"
    if per_batch * 1.15 > left:
        row["status"] = f"skipped: projected {per_batch:.0f} s, {left:.0f} s left"
        return row
    count = batch * batches
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds, outputs = run_engine(
        model, tok, name=name, resolution=resolution, batch=batch, tokens=tokens,
        pages=pages[:count], clock=clock,
    )  # fmt: skip
    bad = [o for o in outputs if not isinstance(o, EngineOutput)]
    short = [o for o in outputs if isinstance(o, EngineOutput) and o.output_tokens != tokens]
    first_ok = next((o for o in outputs if isinstance(o, EngineOutput)), None)
    row.update(
        pages=count,
        seconds=round(seconds, 3),
        pages_per_s=round(count / seconds, 3),
        output_tokens_per_s=round(count * tokens / seconds, 1),
        vision_tokens=first_ok.vision_tokens if first_ok else None,
        distinct_tokens_first_page=len(set(first_ok.token_ids)) if first_ok else None,
        status="ok" if not bad and not short else f"{len(bad)} failed, {len(short)} short",
    )
    if bad:
        row["error"] = str(bad[0])[:300]
    if cuda:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'model':<10} {'mode':<7} {'batch':>5} {'pages':>5} {'pages/s':>8} {'tok/s':>8} "
        f"{'prefill s':>9} {'step ms':>8} {'peak GiB':>8}  status"
    )
    print(head)
    print("-" * len(head))
    for r in rows:

        def cell(key: str, width: int, r: dict[str, Any] = r) -> str:
            value = r.get(key)
            return f"{'-' if value is None else value:>{width}}"

        print(
            f"{r['family']:<10} {r['resolution']:<7} {r['batch']:>5} {cell('pages', 5)} "
            f"{cell('pages_per_s', 8)} {cell('output_tokens_per_s', 8)} {cell('prefill_s', 9)} "
            f"{cell('step_ms', 8)} {cell('peak_gib', 8)}  {r.get('status', '')}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one batch per point")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="shrunken models on the CPU, few tokens"
    )
    parser.add_argument("--tokens", type=int, help="forced output tokens per page (1000)")
    parser.add_argument("--batches", type=int, help="batches per point (default 2; 1 with --quick)")
    parser.add_argument(
        "--budget", type=float, default=390.0, help="seconds for the whole run (default 390)"
    )
    parser.add_argument("--json", type=Path, help="where to write the JSON (default $OUT/gpu.json)")
    parser.add_argument("--only", help="comma-separated families to run (v1,v2)")
    args = parser.parse_args(argv)

    began = time.monotonic()
    deadline = began + args.budget
    import torch
    import transformers

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-smoke to check the script on the CPU")
        return 2
    device = torch.device("cpu" if smoke else "cuda")
    dtype = torch.float32 if smoke else torch.bfloat16
    tokens = args.tokens or (16 if smoke else 1000)
    points = [p for p in POINTS if not (p[3] and (smoke or args.quick))]
    if smoke:  # the same points, batch sizes shrunk to 4 / 2 / 1
        points = [(f, r, {32: 4, 8: 2, 1: 1}[b], x) for f, r, b, x in points]
    if args.only:
        points = [p for p in points if p[0] in args.only.split(",")]
    batches = args.batches or (1 if args.quick or smoke else 2)
    out_path = args.json
    if out_path is None and os.environ.get("OUT"):
        out_path = Path(os.environ["OUT"]) / "gpu.json"

    meta: dict[str, Any] = {
        "mode": "cpu-smoke" if smoke else ("quick" if args.quick else "full"),
        "device": (
            torch.cuda.get_device_name(0)
            if device.type == "cuda"
            else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
        ),
        "dtype": str(dtype),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "tokens_per_page": tokens,
        "page": f"A4 {A4[0]}x{A4[1]} RGB noise",
        "prompt": "markdown",
        "ngram_guard": "engine default (30/90)",
    }
    rows: list[dict[str, Any]] = []

    def save() -> None:
        meta["elapsed_s"] = round(time.monotonic() - began, 1)
        if out_path is not None:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = out_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2), encoding="utf-8")
            tmp.replace(out_path)

    clock = Clock(device)
    print(f"{meta['device']} | torch {torch.__version__} | transformers {transformers.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tok = real_vocab_tokenizer(Path(tmp) / "tokenizer")
        most_pages = max(b for _f, _r, b, _x in points) * batches
        pages = a4_pages(min(most_pages, 16))
        while len(pages) < most_pages:
            pages += pages[: most_pages - len(pages)]
        try:
            meta["preprocess_a4_gundam"] = measure_preprocess(pages, device, clock)
        except Exception as exc:  # never costs the throughput points
            meta["preprocess_a4_gundam"] = f"error: {type(exc).__name__}: {str(exc)[:300]}"
        print("preprocess:", json.dumps(meta["preprocess_a4_gundam"]), flush=True)
        save()
        for family in ("v1", "v2"):
            mine = [p for p in points if p[0] == family]
            if not mine:
                continue
            if deadline - time.monotonic() < 20:
                rows.extend(
                    {"family": f, "resolution": r, "batch": b, "status": "skipped: time budget"}
                    for f, r, b, x in mine
                    if not x
                )
                continue
            start = clock.now()
            model = build_model(family, smoke=smoke, device=device, dtype=dtype)
            built = clock.now() - start
            params = sum(p.numel() for p in model.parameters())
            meta[f"{family}_params"] = params
            meta[f"{family}_build_s"] = round(built, 2)
            if device.type == "cuda":
                meta[f"{family}_weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
            print(f"built {family}: {params / 1e9:.3f} B params in {built:.1f} s", flush=True)
            # warm-up: kernels, cuBLAS handles, allocator
            run_engine(
                model, tok, name="warm-up", resolution=mine[0][1], batch=1, tokens=4,
                pages=pages[:1], clock=clock,
            )  # fmt: skip
            for fam, resolution, batch, optional in mine:
                if optional and deadline - time.monotonic() < EXTRA_RESERVE_S:
                    continue
                try:
                    row = measure_point(
                        model,
                        tok,
                        family=fam,
                        resolution=resolution,
                        batch=batch,
                        tokens=tokens,
                        batches=1 if optional else batches,
                        pages=pages,
                        clock=clock,
                        deadline=deadline,
                    )
                except Exception as exc:  # one point failing must not cost the others
                    row = {"family": fam, "resolution": resolution, "batch": batch}
                    row["status"] = f"error: {type(exc).__name__}: {str(exc)[:300]}"
                    with contextlib.suppress(Exception):
                        torch.cuda.empty_cache()
                row["extra"] = optional
                rows.append(row)
                print(json.dumps(row), flush=True)
                save()
            del model
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
    rows.sort(key=lambda r: (r["family"], r["resolution"], r["batch"]))
    save()
    print()
    print_table(rows)
    print(f"\nelapsed {time.monotonic() - began:.0f} s; JSON: {out_path or '(not written)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
