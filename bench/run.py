"""Benchmarks (not part of the test run). ``python bench/run.py`` prints a table.

Every figure is measured in the same run as its reference, so ratios hold on a noisy
machine; absolute seconds depend on the machine (printed at the top).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _median(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _page(width: int = 1191, height: int = 1684, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def bench_preprocess(rows: list[tuple[str, str]]) -> None:
    from transformers import DeepseekOcr2ImageProcessorPil

    from langchain_deepseek_ocr._preprocess import prepare_image
    from langchain_deepseek_ocr._tasks import resolution_spec

    page = _page()
    hf = DeepseekOcr2ImageProcessorPil()
    for family in ("v1", "v2"):
        spec = resolution_spec(family, "gundam")
        ours = _median(lambda s=spec: prepare_image(page, s))
        rows.append((f"preprocess A4 {family} gundam (ours)", f"{ours * 1000:.1f} ms/page"))
    ref = _median(lambda: hf(images=page, return_tensors="np"))
    ours2 = _median(lambda: prepare_image(page, resolution_spec("v2", "gundam")))
    rows.append(
        (
            "preprocess A4 v2 (transformers DeepseekOcr2ImageProcessorPil)",
            f"{ref * 1000:.1f} ms/page",
        )
    )
    rows.append(("preprocess speed-up v2 (transformers / ours)", f"{ref / ours2:.2f}x"))


def bench_parse(rows: list[tuple[str, str]]) -> None:
    import json

    from langchain_deepseek_ocr._parse import parse_output

    samples = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "outputs.jsonl"
    raws = [json.loads(line)["raw"] for line in samples.read_text().splitlines() if line.strip()]
    per = _median(lambda: [parse_output(r, (1191, 1684)) for r in raws], repeat=20) / len(raws)
    rows.append(("parse_output, shared samples", f"{per * 1000:.3f} ms/page"))


def bench_tiny_pipeline(rows: list[tuple[str, str]]) -> None:
    from langchain_deepseek_ocr import OCRRequest, Resolution, TransformersEngine
    from langchain_deepseek_ocr._tasks import build_prompt
    from langchain_deepseek_ocr.testing import build_tiny_v1, build_tiny_v2

    page = _page()
    with tempfile.TemporaryDirectory() as tmp:
        for family, build, modes in (
            ("v1", build_tiny_v1, ("tiny", "small", "base", "large", "gundam")),
            ("v2", build_tiny_v2, ("small", "base", "gundam")),
        ):
            folder = build(Path(tmp) / family)
            start = time.perf_counter()
            engine = TransformersEngine(
                str(folder), device="cpu", max_new_tokens=32, ngram_guard=False
            ).load()
            rows.append(
                (
                    f"tiny {family}: load (config, weights, tokenizer)",
                    f"{time.perf_counter() - start:.2f} s",
                )
            )
            for mode in modes:
                req = OCRRequest(
                    image=page, prompt=build_prompt("markdown"), resolution=Resolution(mode)
                )
                engine.generate([req])  # warm-up
                sec = _median(lambda r=req, e=engine: e.generate([r]), repeat=3)
                out = engine.generate([req])[0]
                rows.append(
                    (
                        f"tiny {family} {mode}: A4 page, 32 new tokens",
                        f"{sec:.3f} s/page ({out.vision_tokens} vision tokens)",
                    )
                )
            reqs = [OCRRequest(image=_page(seed=i), prompt=build_prompt("free")) for i in range(8)]
            one = _median(lambda e=engine, rs=reqs: [e.generate([r]) for r in rs], repeat=1)
            batched = _median(lambda e=engine, rs=reqs: e.generate(rs), repeat=1)
            rows.append(
                (
                    f"tiny {family} gundam: 8 pages one by one / batched",
                    f"{one:.2f} s / {batched:.2f} s",
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["preprocess", "parse", "tiny"], help="run one benchmark")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows: list[tuple[str, str]] = []
    benches = {"preprocess": bench_preprocess, "parse": bench_parse, "tiny": bench_tiny_pipeline}
    for name, fn in benches.items():
        if args.only in (None, name):
            fn(rows)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, torch {torch.__version__}"
    )
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
