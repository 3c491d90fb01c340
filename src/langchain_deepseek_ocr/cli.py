"""``deepseek-ocr``: images, folders and PDFs in; markdown (and JSON, boxes, crops) out.

Each input ``NAME.ext`` gives ``OUT/NAME.md`` (pages joined with DeepSeek's page-split
line), and on request ``OUT/NAME.json`` (every page's OCRResult), ``OUT/NAME.boxes.png``
(``NAME.pN.boxes.png`` per page of a document: the layout boxes drawn for a person to look
at) and ``OUT/NAME_images/`` (figure crops, linked from the markdown).

A failing input or page gets one line on stderr naming it and why; everything else is
still written, and the exit code is 1. If the model cannot be loaded the one line says so
and how to point ``--model`` at a local folder (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

PAGE_SPLIT = "\n\n<--- Page Split --->\n\n"
"""How DeepSeek's own PDF script joins pages; kept so outputs compare with upstream's."""

_SUFFIXES = {
    ".pdf",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
}


def _parser() -> argparse.ArgumentParser:
    from langchain_deepseek_ocr._checkpoint import DEFAULT_MODEL
    from langchain_deepseek_ocr._tasks import OCRTask, Resolution

    p = argparse.ArgumentParser(
        prog="deepseek-ocr",
        description="OCR images and PDFs with DeepSeek-OCR (v1 or v2) into markdown.",
    )
    p.add_argument("inputs", nargs="+", help="image or PDF files, or folders of them")
    p.add_argument("-o", "--out", default="deepseek-ocr-out", help="output folder")
    p.add_argument(
        "--task",
        default="markdown",
        choices=[t.value for t in OCRTask if t is not OCRTask.CUSTOM],
        help="what to ask the model (default: markdown)",
    )
    p.add_argument("--ref", help="what to find, for --task locate")
    p.add_argument("--prompt", help="a prompt of your own instead of the task's")
    p.add_argument(
        "--resolution",
        choices=[r.value for r in Resolution],
        help="resolution mode (default: gundam; v2 has small/base/gundam)",
    )
    p.add_argument(
        "--model",
        help=f"hub id or local checkpoint folder (default {DEFAULT_MODEL}); "
        "with --server: the served model id (default: the one the server serves)",
    )
    p.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help="an OpenAI-compatible DeepSeek-OCR server (vLLM, SGLang, Ollama) instead of "
        "the local model; repeat for several (requests are spread over them). The API "
        "key comes from DEEPSEEK_OCR_API_KEY or OPENAI_API_KEY",
    )
    p.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: best available)")
    p.add_argument("--dtype", help="bfloat16, float16 or float32 (default: bf16 on cuda)")
    p.add_argument("--batch-size", type=int, default=8, help="pages per generate call")
    p.add_argument("--max-new-tokens", type=int, default=8192, help="token limit per page")
    p.add_argument("--max-tiles", type=int, default=6, help="most tiles in gundam mode")
    p.add_argument("--pages", help="pages of PDFs to read, 1-based: '1-3,7'")
    p.add_argument("--dpi", type=float, default=144.0, help="PDF rendering dpi (default 144)")
    p.add_argument("--json", action="store_true", help="also write NAME.json (OCRResult)")
    p.add_argument("--boxes", action="store_true", help="also write an annotated PNG")
    p.add_argument("--crops", action="store_true", help="save figure crops and link them")
    p.add_argument("--stdout", action="store_true", help="also print the markdown")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _parse_pages(spec: str | None) -> list[int] | None:
    if not spec:
        return None
    pages: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            pages.extend(range(int(lo) - 1, int(hi)))
        else:
            pages.append(int(part) - 1)
    if any(p < 0 for p in pages):
        raise ValueError("page numbers start at 1")
    return pages


def _expand(inputs: Sequence[str]) -> Iterator[Path]:
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            yield from sorted(
                f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in _SUFFIXES
            )
        else:
            yield path


class _Progress:
    """A tqdm bar when tqdm is installed and stderr is a terminal; otherwise silent."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="page", file=sys.stderr)
            except ImportError:
                self.bar = None
        self.done = 0
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            print(f"\r{self.done}/{self.total} pages", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def _error_line(exc: BaseException) -> None:
    print(f"deepseek-ocr: error: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, *, engine: Any = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 some input failed, 2 unusable setup).

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        engine: An engine to use instead of building a ``TransformersEngine`` from the
            model options (for embedding the CLI in other programs).
    """
    args = _parser().parse_args(argv)
    try:
        pages = _parse_pages(args.pages)
    except ValueError as exc:
        print(f"deepseek-ocr: error: --pages: {exc}", file=sys.stderr)
        return 2
    if args.task == "locate" and not args.ref:
        print("deepseek-ocr: error: --task locate needs --ref", file=sys.stderr)
        return 2

    from langchain_deepseek_ocr._checkpoint import DEFAULT_MODEL
    from langchain_deepseek_ocr._errors import DeepSeekOCRError, ModelLoadError
    from langchain_deepseek_ocr._facade import DeepSeekOCR
    from langchain_deepseek_ocr._inputs import InputLimits, count_pages
    from langchain_deepseek_ocr._transformers_engine import TransformersEngine

    files = list(_expand(args.inputs))
    out_dir = Path(args.out)
    model = args.model or DEFAULT_MODEL
    try:
        if engine is None and args.server:
            engine = _server_engine(args)
        engine = engine or TransformersEngine(
            model,
            device=args.device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            resolution=args.resolution,
            max_tiles=args.max_tiles,
        )
        if isinstance(engine, TransformersEngine):
            engine.load()
        elif args.resolution and args.resolution not in {r.value for r in engine.resolutions()}:
            served = ", ".join(r.value for r in engine.resolutions())
            print(
                f"deepseek-ocr: error: the server runs one fixed resolution ({served}); "
                f"--resolution {args.resolution} is not available there",
                file=sys.stderr,
            )
            return 2
        ocr = DeepSeekOCR(engine=engine, limits=InputLimits(pdf_dpi=args.dpi))
    except ModelLoadError as exc:
        hint = "" if "--model" in exc.message else " (point --model at a local checkpoint folder)"
        where = "" if exc.message.startswith("cannot load model") else f"model {model!r}: "
        print(f"deepseek-ocr: error: {where}{exc.message}{hint}", file=sys.stderr)
        return 2
    except DeepSeekOCRError as exc:
        _error_line(exc)
        return 2

    limits = ocr.limits
    total = 0
    for file in files:
        try:
            total += len(pages) if pages is not None else count_pages(file, limits=limits)
        except DeepSeekOCRError:
            total += 1
    progress = _Progress(total, not args.no_progress)
    failures = 0
    used: set[str] = set()
    options: dict[str, Any] = {"task": args.task, "ref": args.ref, "prompt": args.prompt}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for file in files:
            failures += _run_file(
                ocr=ocr,
                file=file,
                out_dir=out_dir,
                used=used,
                pages=pages,
                args=args,
                options=options,
                progress=progress,
            )
    finally:
        progress.close()
    return 1 if failures else 0


def _server_engine(args: argparse.Namespace) -> Any:
    from langchain_deepseek_ocr._openai_engine import OpenAIEngine

    return OpenAIEngine(
        args.server,
        model=args.model,
        max_new_tokens=args.max_new_tokens,
    )


def _stem(file: Path, used: set[str]) -> str:
    stem = file.stem or "input"
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    return name


def _run_file(
    *,
    ocr: Any,
    file: Path,
    out_dir: Path,
    used: set[str],
    pages: list[int] | None,
    args: argparse.Namespace,
    options: dict[str, Any],
    progress: _Progress,
) -> int:
    from langchain_deepseek_ocr._errors import DeepSeekOCRError
    from langchain_deepseek_ocr._parse import parse_output
    from langchain_deepseek_ocr._render import draw_boxes, save_crops

    stem = _stem(file, used)
    parts: list[str] = []
    records: list[dict[str, Any]] = []
    failures = 0
    multi = None
    for page_image, result in ocr.iter_document(
        file, pages=pages, **{k: v for k, v in options.items() if v}
    ):
        progress.step()
        if isinstance(result, DeepSeekOCRError):
            failures += 1
            _error_line(result)
            where = f"page {result.page + 1}" if result.page is not None else "input"
            parts.append(f"<!-- {where} failed: {result.message} -->")
            records.append({"source": str(file), "page": result.page, "error": str(result)})
            continue
        if multi is None:
            multi = page_image is not None and page_image.total_pages not in (None, 1)
        suffix = f".p{result.page + 1}" if multi and result.page is not None else ""
        text = result.text
        if args.crops and page_image is not None:
            crop_dir = out_dir / f"{stem}_images"
            prefix = f"p{result.page + 1}" if result.page is not None else "fig"
            crops = save_crops(page_image.image, result.blocks, crop_dir, prefix)
            if crops:
                links = [f"{crop_dir.name}/{c.name}" for c in crops]
                text = parse_output(
                    result.raw,
                    result.image_size,
                    finish_reason=result.finish_reason,
                    figure_links=links,
                ).text
        if args.boxes and page_image is not None:
            draw_boxes(page_image.image, result.blocks).save(out_dir / f"{stem}{suffix}.boxes.png")
        if result.repetition or result.truncated:
            why = "a repetition loop" if result.repetition else "truncated output"
            where = f"page {result.page + 1}" if result.page is not None else "image"
            print(f"deepseek-ocr: warning: {file} ({where}): {why}", file=sys.stderr)
        parts.append(text)
        records.append(result.model_dump(mode="json"))
    markdown = PAGE_SPLIT.join(parts).strip() + "\n"
    (out_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
    if args.json:
        payload = {"source": os.fspath(file), "pages": records}
        (out_dir / f"{stem}.json").write_text(
            json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8"
        )
    if args.stdout:
        sys.stdout.write(markdown)
    return failures


if __name__ == "__main__":
    raise SystemExit(main())
