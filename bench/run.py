"""CPU benchmarks (not part of the test run). ``python bench/run.py`` prints one table.

Every figure is measured in the same run as its reference, interleaved round by round, so
ratios hold on a noisy shared machine; absolute numbers depend on the machine (printed at
the top). Sections (``--only NAME``, repeatable):

* ``preprocess``: A4 page preprocessing, ours vs transformers' v2 image processor and vs
  DeepSeek's algorithm step by step; CPU time of one thread per page (all candidates are
  single-threaded), tensors and token counts checked equal.
* ``parse``: parser + result building per page on real DeepSeek-OCR outputs.
* ``tiny``: the local engine end to end on tiny random checkpoints (every mode; 8 pages
  batched vs one by one; the vision tower in page-aligned micro-batches vs all at once).
* ``memory``: peak RSS of a 200-page vs a 10-page PDF through the facade's lazy document
  path (fresh subprocess each; ``bench/memory.py``).
* ``startup``: import time of the package and of the CLI.

The GPU benchmark is separate: ``bench/gpu.py`` (``--cpu-smoke`` runs it here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLES = ROOT.parent / "shared" / "samples" / "outputs.jsonl"
A4 = (1191, 1684)

Row = tuple[str, str]


def _page(width: int = A4[0], height: int = A4[1], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _interleaved(
    candidates: dict[str, Callable[[], Any]], rounds: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per call; the candidates take turns, round by round."""
    wall: dict[str, list[float]] = {name: [] for name in candidates}
    cpu: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in candidates.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in candidates}


# -- preprocessing --------------------------------------------------------------------------


def _to_tensor(img: Image.Image) -> np.ndarray:
    """torchvision's ``ToTensor`` + ``Normalize(0.5, 0.5)``, in numpy (float32, CHW)."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return ((arr - 0.5) / 0.5).transpose(2, 0, 1)


def deepseek_reference(image: Image.Image, spec: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """DeepSeek's ``image_process.py`` step by step: resize, crop each tile, pad the global."""
    from langchain_deepseek_ocr._preprocess import select_grid

    grid = select_grid(*image.size, spec)
    tiles = None
    if grid is not None:
        cols, rows = grid
        size = spec.image_size
        resized = image.resize((size * cols, size * rows), Image.Resampling.BICUBIC)
        crops = []
        for i in range(cols * rows):
            box = ((i % cols) * size, (i // cols) * size)
            crops.append(_to_tensor(resized.crop((*box, box[0] + size, box[1] + size))))
        tiles = np.stack(crops)
    side = spec.base_size if spec.crop else spec.image_size
    if not spec.crop and spec.image_size <= 640 and spec.family.value == "v1":
        image = image.resize((side, side), Image.Resampling.BICUBIC)
    glob = ImageOps.pad(image, (side, side), color=(127, 127, 127))
    return _to_tensor(glob), tiles


def bench_preprocess(rows: list[Row], rounds: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from transformers import DeepseekOcr2ImageProcessorPil

    from langchain_deepseek_ocr._preprocess import count_image_tokens, pixel_batch, prepare_image
    from langchain_deepseek_ocr._tasks import resolution_spec

    torch.set_num_threads(1)  # one thread per candidate (but "pool"): CPU time == work
    threads = os.cpu_count() or 1
    pool = ThreadPoolExecutor(threads)
    page = _page()
    pages = [_page(seed=i) for i in range(threads)]
    hf = DeepseekOcr2ImageProcessorPil()
    v1 = resolution_spec("v1", "gundam")
    v2 = resolution_spec("v2", "gundam")

    def ours_float(spec: Any) -> Any:
        return pixel_batch([prepare_image(page, spec)], device="cpu")

    staging = np.empty(A4[0] * A4[1] * 3, dtype=np.uint8)

    def ours_gpu_host(spec: Any) -> Any:
        """The CPU's share when the engine resizes on a GPU: the page's bytes, staged."""
        prepared = prepare_image(page, spec, defer_resize=True)
        staging[:] = prepared.page_pixels.reshape(-1)  # the copy into pinned memory
        return prepared

    def ours_device_on_cpu(spec: Any) -> Any:
        """The device part of that path, run by torch on this CPU (a GPU is far faster)."""
        return pixel_batch([prepare_image(page, spec, defer_resize=True)], device="cpu")

    med = _interleaved(
        {
            "hf v2": lambda: hf(images=page, return_tensors="np"),
            "ref v2": lambda: deepseek_reference(page, v2),
            "ours v2": lambda: prepare_image(page, v2),
            "ours v2 pool": lambda: list(pool.map(prepare_image, pages, [v2] * threads)),
            "ours v2 float": lambda: ours_float(v2),
            "ours v2 gpu host": lambda: ours_gpu_host(v2),
            "ours v2 device on cpu": lambda: ours_device_on_cpu(v2),
            "ref v1": lambda: deepseek_reference(page, v1),
            "ours v1": lambda: prepare_image(page, v1),
            "ours v1 pool": lambda: list(pool.map(prepare_image, pages, [v1] * threads)),
            "ours v1 float": lambda: ours_float(v1),
            "ours v1 gpu host": lambda: ours_gpu_host(v1),
        },
        rounds,
    )
    pool.shutdown()

    # the same tensors and token counts, checked on this page
    ref = hf(images=page, return_tensors="np")
    got = ours_float(v2)
    diff = max(
        float(np.abs(got.pixel_values.numpy()[0] - ref["pixel_values"][0]).max()),
        float(np.abs(got.pixel_values_local.numpy() - ref["pixel_values_local"]).max()),
    )
    ref_glob, ref_tiles = deepseek_reference(page, v1)
    got1 = ours_float(v1)
    diff1 = max(
        float(np.abs(got1.pixel_values.numpy()[0] - ref_glob).max()),
        float(np.abs(got1.pixel_values_local.numpy() - ref_tiles).max()),
    )
    hf_tokens = 256 + 144 * int(ref["num_local_patches"][0]) + 1
    on_device = ours_device_on_cpu(v2)
    same_on_device = bool(
        torch.equal(on_device.pixel_values, got.pixel_values)
        and torch.equal(on_device.pixel_values_local, got.pixel_values_local)
    )

    # the pool prepares `threads` pages at once, as the engine's workers do: per page
    for name in ("ours v2 pool", "ours v1 pool"):
        wall, cpu = med[name]
        med[name] = (wall / threads, cpu / threads)

    def cell(name: str) -> str:
        wall, cpu = med[name]
        return f"{cpu * 1000:6.1f} ms CPU, {wall * 1000:6.1f} ms wall"

    def ratio(ref_name: str, name: str) -> str:
        (rw, rc), (w, c) = med[ref_name], med[name]
        return f"{rc / c:.1f}x CPU, {rw / w:.1f}x wall"

    a4 = "preprocess A4 1191x1684"
    split = f"{threads} pages on {threads} threads, per page"
    tok2 = f"{count_image_tokens(*A4, v2)} / {hf_tokens}"
    tok1 = f"{count_image_tokens(*A4, v1)}"
    rows += [
        (f"{a4} v2 gundam: transformers DeepseekOcr2ImageProcessorPil", cell("hf v2")),
        (f"{a4} v2 gundam: DeepSeek's algorithm step by step", cell("ref v2")),
        (f"{a4} v2 gundam: ours, host part (uint8, normalised on device)", cell("ours v2")),
        (f"{a4} v2 gundam: ours, host part {split}", cell("ours v2 pool")),
        (f"{a4} v2 gundam: ours, float32 tensors on the CPU (no GPU)", cell("ours v2 float")),
        ("  v2 vs transformers: host part, one thread", ratio("hf v2", "ours v2")),
        (f"  v2 vs transformers: host part {split}", ratio("hf v2", "ours v2 pool")),
        ("  v2 vs transformers: float32 on the CPU", ratio("hf v2", "ours v2 float")),
        ("  v2 max |ours - transformers|; tokens ours / transformers", f"{diff:.1e}; {tok2}"),
        (
            f"{a4} v2 gundam: ours, resized on the GPU: the CPU's share (page bytes staged)",
            cell("ours v2 gpu host"),
        ),
        (
            "  v2 vs transformers: CPU's share when resizing on the GPU",
            ratio("hf v2", "ours v2 gpu host"),
        ),
        (
            f"{a4} v2 gundam: that path's device part, run by torch on this CPU",
            cell("ours v2 device on cpu") + f" (tensors equal to PIL's path: {same_on_device})",
        ),
        (f"{a4} v1 gundam: DeepSeek's algorithm step by step", cell("ref v1")),
        (f"{a4} v1 gundam: ours, host part (uint8)", cell("ours v1")),
        (f"{a4} v1 gundam: ours, host part {split}", cell("ours v1 pool")),
        (f"{a4} v1 gundam: ours, float32 tensors on the CPU (no GPU)", cell("ours v1 float")),
        ("  v1 vs DeepSeek's algorithm: host part, one thread", ratio("ref v1", "ours v1")),
        ("  v1 vs transformers' v2 processor (yardstick): one thread", ratio("hf v2", "ours v1")),
        (f"  v1 vs transformers' v2 processor: {split}", ratio("hf v2", "ours v1 pool")),
        ("  v1 max |ours - DeepSeek's algorithm|; tokens", f"{diff1:.1e}; {tok1}"),
        (
            f"{a4} v1 gundam: ours, resized on the GPU: the CPU's share (page bytes staged)",
            cell("ours v1 gpu host"),
        ),
        (
            "  v1 vs DeepSeek's algorithm: CPU's share when resizing on the GPU",
            ratio("ref v1", "ours v1 gpu host"),
        ),
    ]


# -- parser and results ---------------------------------------------------------------------


def bench_parse(rows: list[Row], rounds: int) -> None:
    from langchain_deepseek_ocr._engine import EngineOutput, OCRRequest
    from langchain_deepseek_ocr._facade import build_result
    from langchain_deepseek_ocr._parse import parse_output
    from langchain_deepseek_ocr._tasks import build_prompt

    if SAMPLES.is_file():
        samples = [json.loads(x) for x in SAMPLES.read_text("utf-8").splitlines() if x.strip()]
        raws = [(s["raw"], tuple(s.get("image_size") or A4)) for s in samples]
        label = f"{len(raws)} real outputs"
    else:  # pragma: no cover - the shared samples live beside the checkout
        raws = [("<|ref|>title<|/ref|><|det|>[[65, 142, 740, 255]]<|/det|>\n# Title\n", A4)]
        label = "1 synthetic output"
    chars = statistics.mean(len(r) for r, _ in raws)
    image = _page(64, 64)
    pairs = [
        (
            EngineOutput(
                raw=raw,
                finish_reason="stop",
                vision_tokens=903,
                prompt_tokens=915,
                output_tokens=len(raw) // 3,
                seconds=1.0,
                resolution="gundam",
                model="m",
            ),
            OCRRequest(image=image.resize(size), prompt=build_prompt("markdown")),
        )
        for raw, size in raws
    ]
    med = _interleaved(
        {
            "parse": lambda: [parse_output(r, s) for r, s in raws],
            "build": lambda: [build_result(o, q) for o, q in pairs],
        },
        rounds * 4,
    )
    per = {name: cpu / len(raws) * 1000 for name, (_wall, cpu) in med.items()}
    rows.append(
        (f"parse_output per page ({label}, {chars:.0f} chars avg)", f"{per['parse']:.3f} ms")
    )
    rows.append(("build_result per page (parse + OCRResult)", f"{per['build']:.3f} ms"))


# -- the engine on tiny checkpoints ---------------------------------------------------------


def _rusage_run(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall, user+sys CPU) seconds of one call."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def bench_tiny_pipeline(rows: list[Row], rounds: int) -> None:
    import torch

    from langchain_deepseek_ocr import OCRRequest, Resolution, TransformersEngine
    from langchain_deepseek_ocr._tasks import build_prompt
    from langchain_deepseek_ocr.testing import build_tiny_v1, build_tiny_v2

    torch.set_num_threads(os.cpu_count() or 1)
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
                sec = statistics.median(
                    _rusage_run(lambda r=req, e=engine: e.generate([r]))[0] for _ in range(3)
                )
                out = engine.generate([req])[0]
                rows.append(
                    (
                        f"tiny {family} {mode}: A4 page, 32 new tokens",
                        f"{sec:.3f} s/page ({out.vision_tokens} vision tokens)",
                    )
                )
            reqs = [OCRRequest(image=_page(seed=i), prompt=build_prompt("free")) for i in range(8)]
            whole = TransformersEngine(
                str(folder), device="cpu", max_new_tokens=32, ngram_guard=False, vision_batch=10**6
            ).load()  # the vision tower on all 8 pages at once (the previous behaviour)
            runs: dict[str, list[tuple[float, float]]] = {"one": [], "batched": [], "whole": []}
            calls = {
                "one": lambda e=engine, rs=reqs: [e.generate([r]) for r in rs],
                "batched": lambda e=engine, rs=reqs: e.generate(rs),
                "whole": lambda e=whole, rs=reqs: e.generate(rs),
            }
            for _ in range(max(2, rounds // 3)):
                for name, call in calls.items():
                    runs[name].append(_rusage_run(call))
            best = {k: min(v) for k, v in runs.items()}  # least disturbed run of each
            rows.append(
                (
                    f"tiny {family} gundam, 8 A4 pages: one by one / batched (wall, best of "
                    f"{len(runs['one'])})",
                    f"{best['one'][0]:.2f} s / {best['batched'][0]:.2f} s "
                    f"(batched {best['one'][0] / best['batched'][0]:.2f}x)",
                )
            )
            rows.append(
                (
                    f"tiny {family} gundam, 8 pages batched: vision per page / all at once (wall)",
                    f"{best['batched'][0]:.2f} s / {best['whole'][0]:.2f} s",
                )
            )
            for e in (engine, whole):
                e.close()


# -- memory -----------------------------------------------------------------------------------


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE / "memory.py"), *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(rows: list[Row], engine: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pdfs = {}
        for pages in (10, 200):
            pdfs[pages] = Path(tmp) / f"doc{pages}.pdf"
            subprocess.run(
                [sys.executable, str(HERE / "memory.py"), "make", str(pdfs[pages]), str(pages)],
                check=True,
                cwd=ROOT,
            )
        for reopen in (32, 0):
            opts = ["--engine", engine, "--reopen", str(reopen)]
            small = _child("run", str(pdfs[10]), *opts)
            large = _child("run", str(pdfs[200]), *opts)
            if small["ok"] != 10 or large["ok"] != 200:
                raise RuntimeError(f"pages failed: {small} {large}")
            peak = large["peak_rss_kib"] / small["peak_rss_kib"]
            growth_small = small["peak_rss_kib"] - small["baseline_rss_kib"]
            growth_large = large["peak_rss_kib"] - large["baseline_rss_kib"]
            label = "as shipped (PDF reopened every 32 pages)" if reopen else "PDF never reopened"
            rows.append(
                (
                    f"memory, {engine} engine, {label}: peak RSS 200 / 10 pages",
                    f"{large['peak_rss_kib'] / 1024:.0f} MiB / {small['peak_rss_kib'] / 1024:.0f} "
                    f"MiB = {peak:.2f}x (above the ready baseline: {growth_large / 1024:.0f} / "
                    f"{growth_small / 1024:.0f} MiB)",
                )
            )
        probe = [
            _child("pdfium", str(pdfs[200]), str(reopen))["peak_rss_kib"] // 1024
            for reopen in (0, 32)
        ]
        rows.append(
            (
                "memory, pdfium alone, 200 pages: one document / reopened every 32 pages",
                f"{probe[0]} MiB / {probe[1]} MiB peak RSS",
            )
        )


# -- start-up ---------------------------------------------------------------------------------


def bench_startup(rows: list[Row], rounds: int) -> None:
    def wall(cmd: list[str]) -> float:
        times = []
        for _ in range(max(3, rounds // 3)):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    bare = wall([sys.executable, "-c", "pass"])
    package = wall([sys.executable, "-c", "import langchain_deepseek_ocr"])
    cli = wall([sys.executable, "-m", "langchain_deepseek_ocr.cli", "--help"])
    rows.append(("start-up: python -c pass", f"{bare * 1000:.0f} ms"))
    rows.append(("start-up: import langchain_deepseek_ocr", f"{package * 1000:.0f} ms"))
    rows.append(("start-up: deepseek-ocr --help (python -m ...cli)", f"{cli * 1000:.0f} ms"))


def main() -> None:
    sections = ["preprocess", "parse", "tiny", "memory", "startup"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sections, help="run these only")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument(
        "--memory-engine",
        choices=["scripted", "tiny"],
        default="scripted",
        help="engine of the memory benchmark (tiny: the real engine, ~3 min)",
    )
    args = parser.parse_args()
    import torch

    chosen = args.only or sections
    rows: list[Row] = []
    started = time.perf_counter()
    if "preprocess" in chosen:
        bench_preprocess(rows, args.rounds)
    if "parse" in chosen:
        bench_parse(rows, args.rounds)
    if "tiny" in chosen:
        bench_tiny_pipeline(rows, args.rounds)
    if "memory" in chosen:
        bench_memory(rows, args.memory_engine)
    if "startup" in chosen:
        bench_startup(rows, args.rounds)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {load:.1f}, Python {sys.version.split()[0]}, torch {torch.__version__}; "
        f"{time.perf_counter() - started:.0f} s"
    )
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
