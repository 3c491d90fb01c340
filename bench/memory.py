"""Peak RSS of OCR-ing a PDF through the facade's lazy document path (one process per run).

    python bench/memory.py make PDF PAGES          # write an A4 test PDF (144 dpi pages)
    python bench/memory.py run PDF [--engine scripted|tiny] [--wiring facade|read-ahead]
                                   [--reopen N]
    python bench/memory.py pdfium PDF REOPEN       # pdfium alone, reopening every REOPEN pages

``run`` prints one JSON line: the peak RSS of the process (``VmHWM``), the RSS once the
imports and the engine are ready (the baseline), and the pages seen. ``bench/run.py`` runs
it in fresh subprocesses for a 10-page and a 200-page PDF and compares the peaks.

Wirings:

* ``facade``: ``DeepSeekOCR.ocr_document`` as the facade implements it today.
* ``read-ahead``: the loop proposed for ``DeepSeekOCR.iter_document`` -- pages rendered and
  requests built one chunk ahead in a background thread (``_preprocess.read_ahead``), the
  engine told to prepare them (``engine.prefetch``) -- to show it stays bounded too.
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

        class Forgetful(ScriptedEngine):
            """ScriptedEngine keeps every request in ``calls`` (for tests): drop them here."""

            def generate(self, requests: Any, **kwargs: Any) -> Any:
                try:
                    return super().generate(requests, **kwargs)
                finally:
                    self.calls.clear()

        return Forgetful("# Title\n\nSome text.", batch_size=8)
    from langchain_deepseek_ocr import TransformersEngine
    from langchain_deepseek_ocr.testing import build_tiny_v1

    build_tiny_v1(folder)
    return TransformersEngine(str(folder), device="cpu", max_new_tokens=2, resolution="tiny").load()


def _read_ahead_document(ocr: Any, source: Path) -> Any:
    """The proposed ``iter_document`` loop (see the module docstring)."""
    from langchain_deepseek_ocr._errors import DeepSeekOCRError
    from langchain_deepseek_ocr._inputs import iter_page_results
    from langchain_deepseek_ocr._preprocess import read_ahead

    size = getattr(ocr.engine, "batch_size", 8)
    prefetch = getattr(ocr.engine, "prefetch", None)

    def produce() -> Any:
        for item in iter_page_results(source, limits=ocr.limits):
            if isinstance(item, DeepSeekOCRError):
                yield item, None
                continue
            request = ocr._request(item, {})
            if prefetch is not None:
                prefetch([request])
            yield item, request

    chunk: list[Any] = []
    for item, request in read_ahead(produce(), size):
        if request is None:
            yield from ocr._run_chunk(chunk)
            chunk = []
            yield None, item
            continue
        chunk.append((item, request))
        if len(chunk) >= size:
            yield from ocr._run_chunk(chunk)
            chunk = []
    yield from ocr._run_chunk(chunk)


def reopen_pdf_every(pages: int) -> None:
    """Patch ``_inputs._iter_pdf`` to reopen the pdfium document every ``pages`` pages.

    The change proposed for ``_inputs`` (bench-local here): pdfium keeps per-page state in
    an open document until it is closed, so RSS grows with the page count; reopening the
    document from the same stream every few dozen pages bounds it.
    """
    from langchain_deepseek_ocr import _inputs as inputs

    def iter_pdf(opened: Any, source: str, wanted: Any, limits: Any, tolerant: bool) -> Any:
        document = inputs._open_pdf(opened, source)
        try:
            total = inputs._pdf_page_count(document, source)
            if total > limits.max_pages:
                raise inputs.InputTooLargeError("too many pages", source=source)
            rendered = 0
            for index in inputs._resolve_pages(wanted, total, source, tolerant):
                if isinstance(index, inputs.InputError):
                    yield index
                    continue
                try:
                    image = inputs._render_pdf_page(document, index, source, limits)
                except inputs.InputError as exc:
                    if not tolerant:
                        raise
                    yield exc
                    continue
                rendered += 1
                if rendered % pages == 0:
                    inputs._close_pdf(document)
                    document = inputs._open_pdf(opened, source)
                yield inputs.PageImage(image, source, index, total)
        finally:
            inputs._close_pdf(document)

    inputs._iter_pdf = iter_pdf


def run(pdf: Path, engine_kind: str, wiring: str, reopen: int = 0) -> dict[str, Any]:
    from langchain_deepseek_ocr import DeepSeekOCR, OCRResult

    if reopen:
        reopen_pdf_every(reopen)

    with tempfile.TemporaryDirectory() as tmp:
        ocr = DeepSeekOCR(engine=_engine(engine_kind, Path(tmp) / "tiny"))
        baseline = _status_kib("VmRSS")
        peak_before = _status_kib("VmHWM")
        ok = pages = 0
        if wiring == "facade":
            stream = ((None, r) for r in ocr.ocr_document(str(pdf)))
        else:
            stream = _read_ahead_document(ocr, pdf)
        for _page, result in stream:
            pages += 1
            ok += isinstance(result, OCRResult)
    peak = _status_kib("VmHWM")
    return {
        "pdf": str(pdf),
        "engine": engine_kind,
        "wiring": wiring,
        "reopen": reopen,
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
    rn.add_argument("--wiring", choices=["facade", "read-ahead"], default="facade")
    rn.add_argument(
        "--reopen", type=int, default=0, help="reopen the PDF every N pages (proposed change)"
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
    print(json.dumps(run(args.pdf, args.engine, args.wiring, args.reopen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
