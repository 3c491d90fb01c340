"""Peak RSS of OCR-ing a PDF through the facade's lazy document path (one process per run).

    python bench/memory.py make PDF PAGES          # write an A4 test PDF (144 dpi pages)
    python bench/memory.py run PDF [--engine scripted|tiny] [--reopen N]
    python bench/memory.py pdfium PDF REOPEN       # pdfium alone, reopening every REOPEN pages

``run`` prints one JSON line: the peak RSS of the process (``VmHWM``), the RSS once the
imports and the engine are ready (the baseline), and the pages seen. ``bench/run.py`` runs
it in fresh subprocesses for a 10-page and a 200-page PDF and compares the peaks.

The document path is ``DeepSeekOCR.ocr_document`` as shipped: pages rendered one chunk ahead
in a background thread (and prefetched by the local engine), the PDF reopened every 32 pages
(``_inputs._PDF_REOPEN_EVERY``). ``--reopen N`` overrides that period (``0``: never reopen,
to show what reopening buys).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def _status_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in KiB.

    ``VmHWM`` is the peak of this program alone; ``ru_maxrss`` is not: Linux carries the
    parent's high-water mark over ``fork`` + ``exec``, so a child of a big process reports
    the parent's peak.
    """
    with Path("/proc/self/status").open(encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def make_pdf(path: Path, pages: int) -> None:
    """An A4 PDF whose pages are text-like images at 144 dpi (1191 x 1684 pixels)."""
    from PIL import Image, ImageDraw

    def page(n: int) -> Image.Image:
        img = Image.new("L", (1191, 1684), 255)
        draw = ImageDraw.Draw(img)
        for line in range(60):
            draw.text((90, 80 + line * 25), f"Page {n} line {line}: " + "lorem ipsum " * 7, 0)
        return img

    first = page(0)
    first.save(
        path,
        "PDF",
        resolution=144.0,
        save_all=True,
        append_images=(page(n) for n in range(1, pages)),
    )


def _engine(kind: str, folder: Path) -> Any:
    if kind == "scripted":
        from langchain_deepseek_ocr.testing import ScriptedEngine

        return ScriptedEngine("# Title\n\nSome text.", batch_size=8, record_calls=False)
    from langchain_deepseek_ocr import TransformersEngine
    from langchain_deepseek_ocr.testing import build_tiny_v1

    build_tiny_v1(folder)
    return TransformersEngine(str(folder), device="cpu", max_new_tokens=2, resolution="tiny").load()


def _set_reopen(pages: int | None) -> None:
    """Override how often the PDF is reopened (``0``: never); ``None`` keeps the default."""
    from langchain_deepseek_ocr import _inputs

    if pages is not None:
        _inputs._PDF_REOPEN_EVERY = pages if pages > 0 else sys.maxsize


def run(pdf: Path, engine_kind: str, reopen: int | None = None) -> dict[str, Any]:
    from langchain_deepseek_ocr import DeepSeekOCR, OCRResult, _inputs

    _set_reopen(reopen)

    with tempfile.TemporaryDirectory() as tmp:
        ocr = DeepSeekOCR(engine=_engine(engine_kind, Path(tmp) / "tiny"))
        baseline = _status_kib("VmRSS")
        peak_before = _status_kib("VmHWM")
        ok = pages = 0
        for result in ocr.ocr_document(str(pdf)):
            pages += 1
            ok += isinstance(result, OCRResult)
    peak = _status_kib("VmHWM")
    return {
        "pdf": str(pdf),
        "engine": engine_kind,
        "reopen": _inputs._PDF_REOPEN_EVERY,
        "pages": pages,
        "ok": ok,
        "peak_rss_kib": peak,
        "baseline_rss_kib": baseline,
        "peak_before_document_kib": peak_before,
    }


def pdfium_only(pdf: Path, reopen: int) -> dict[str, Any]:
    """Render every page with pypdfium2 alone; ``reopen`` > 0 reopens the document that often.

    Shows where RSS grows with the page count: pdfium keeps per-page state in the open
    document (parsed objects, image streams) until the document is closed.
    """
    import pypdfium2 as pdfium

    with pdf.open("rb") as fh:
        doc = pdfium.PdfDocument(fh)
        for index in range(len(doc)):
            page = doc[index]
            bitmap = page.render(scale=2, rev_byteorder=True)
            bitmap.to_pil().copy()
            bitmap.close()
            page.close()
            if reopen and index % reopen == reopen - 1:
                doc.close()
                fh.seek(0)
                doc = pdfium.PdfDocument(fh)
        doc.close()
    return {"pdf": str(pdf), "reopen": reopen, "peak_rss_kib": _status_kib("VmHWM")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("pdf", type=Path)
    mk.add_argument("pages", type=int)
    rn = sub.add_parser("run")
    rn.add_argument("pdf", type=Path)
    rn.add_argument("--engine", choices=["scripted", "tiny"], default="scripted")
    rn.add_argument(
        "--reopen", type=int, default=None, help="reopen the PDF every N pages (0: never)"
    )
    pd = sub.add_parser("pdfium")
    pd.add_argument("pdf", type=Path)
    pd.add_argument("reopen", type=int)
    args = parser.parse_args(argv)
    if args.cmd == "make":
        make_pdf(args.pdf, args.pages)
        return 0
    if args.cmd == "pdfium":
        print(json.dumps(pdfium_only(args.pdf, args.reopen)))
        return 0
    print(json.dumps(run(args.pdf, args.engine, args.reopen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
