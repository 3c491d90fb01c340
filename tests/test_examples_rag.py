"""examples/summarize_scan.py and examples/rag_ingest.py, run as scripts on a tiny checkpoint.

The checkpoint is the tiny random-weight v1 one built in a temporary folder (conftest's
``tiny_v1_dir``, from ``build_tiny_v1``), loaded by the scripts through ``--model DIR``
exactly as a real checkpoint would be; the LLM is the scripts' ``--scripted-llm`` stand-in
and the embedding their local ``hash`` one, so nothing needs a network.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import noise_image

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# 8 tokens: every page is "cut off", so recovery (tested elsewhere) would run each one twice
FAST = ["--device", "cpu", "--max-new-tokens", "8", "--resolution", "base", "--no-recovery"]


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import pymupdf

    folder = tmp_path_factory.mktemp("example-scans")
    doc = pymupdf.open()
    for i in range(3):
        page = doc.new_page(width=300, height=400)
        buf = io.BytesIO()
        noise_image(300, 400, seed=10 + i).save(buf, format="PNG")
        page.insert_image(page.rect, stream=buf.getvalue())
    doc.save(folder / "report.pdf")
    doc.close()
    noise_image(320, 240, seed=1).save(folder / "receipt.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return {p.name: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def summary(tiny_v1_dir, scans) -> dict:
    proc = _run(
        "summarize_scan.py",
        str(scans["report.pdf"]),
        "--model",
        str(tiny_v1_dir),
        *FAST,
        "--scripted-llm",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_summarize_scan_puts_every_page_into_the_prompt(summary, scans, tiny_v1_dir):
    assert summary["source"] == str(scans["report.pdf"])
    assert [p["page"] for p in summary["pages"]] == [0, 1, 2]
    assert summary["failures"] == []
    assert summary["strategy"] == "stuff"
    assert summary["summary"].startswith("[scripted summary of a ")
    for page in summary["pages"]:
        assert page["text"]
        assert f"<!-- page {page['page']} -->\n{page['text']}" in summary["summary"]
        assert page["metadata"]["model"] == str(tiny_v1_dir)
        assert page["metadata"]["total_pages"] == 3
        assert page["metadata"]["resolution"] == "base"


def test_summarize_scan_map_reduce_for_long_documents(tiny_v1_dir, scans, summary):
    proc = _run(
        "summarize_scan.py",
        str(scans["report.pdf"]),
        "--model",
        str(tiny_v1_dir),
        *FAST,
        "--pages",
        "0,1",
        "--max-chars",
        "5",
        "--scripted-llm",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["strategy"] == "map-reduce"
    assert [p["page"] for p in report["pages"]] == [0, 1]
    # the combine step received the page summaries, each quoting its page's markdown
    assert "Page 0: [scripted summary of a" in report["summary"]
    assert "Page 1: [scripted summary of a" in report["summary"]
    assert [p["text"] for p in report["pages"]] == [p["text"] for p in summary["pages"][:2]]


def test_summarize_scan_needs_an_llm(scans):
    proc = _run("summarize_scan.py", str(scans["receipt.png"]), "--model", "unused")
    assert proc.returncode == 2
    assert "--llm" in proc.stderr


def test_rag_ingest_retrieves_the_page_a_question_quotes(tiny_v1_dir, scans, summary):
    page1 = summary["pages"][1]["text"]
    page2 = summary["pages"][2]["text"]
    proc = _run(
        "rag_ingest.py",
        str(scans["report.pdf"]),
        str(scans["receipt.png"]),
        str(scans["broken.png"]),
        "--model",
        str(tiny_v1_dir),
        *FAST,
        "--embedding",
        "hash",
        "--scripted-llm",
        "-k",
        "1",
        "--query",
        page1,
        "--query",
        page2,
        "--json",
    )
    assert proc.returncode == 1, proc.stderr  # one input failed; the rest was ingested
    report = json.loads(proc.stdout)
    assert report["pages"] == 4
    assert report["chunks"] >= 4
    (failure,) = report["failures"]
    assert failure["source"] == str(scans["broken.png"])
    assert failure["error_type"] == "CorruptInputError"
    assert "page" not in failure
    for answer, page, text in zip(report["answers"], (1, 2), (page1, page2), strict=True):
        (hit,) = answer["hits"]
        assert (hit["source"], hit["page"]) == (str(scans["report.pdf"]), page)
        assert hit["text"] == text
        assert answer["answer"].startswith("[scripted answer from a ")
        assert f"[{scans['report.pdf']}, page {page}]\n{text}" in answer["answer"]
