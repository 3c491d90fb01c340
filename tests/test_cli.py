"""The deepseek-ocr CLI on the tiny real model, and its rendering on a real model output."""

import json
import subprocess
import sys

import pytest

from conftest import SAMPLES, noise_image
from langchain_deepseek_ocr.cli import main
from langchain_deepseek_ocr.testing import ScriptedEngine


@pytest.fixture
def corpus(tmp_path, three_page_pdf):
    folder = tmp_path / "in"
    folder.mkdir()
    noise_image(700, 500, seed=1).save(folder / "photo.png")
    (folder / "doc.pdf").write_bytes(three_page_pdf.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def test_cli_on_a_folder_with_a_bad_file(tiny_v1_dir, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            str(corpus),
            "--model",
            str(tiny_v1_dir),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--max-new-tokens",
            "6",
            "--json",
            "--boxes",
            "--no-progress",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    failing = [line for line in err if "error" in line]
    assert len(failing) == 1
    assert "broken.jpg" in failing[0]
    assert sorted(p.name for p in out.glob("*.md")) == ["broken.md", "doc.md", "photo.md"]
    doc = (out / "doc.md").read_text()
    assert doc.count("<--- Page Split --->") == 2
    data = json.loads((out / "doc.json").read_text())
    assert [p["page"] for p in data["pages"]] == [0, 1, 2]
    assert all(p["vision_tokens"] == 903 for p in data["pages"])
    assert (out / "photo.boxes.png").is_file()
    assert (out / "doc.p3.boxes.png").is_file()


def test_cli_model_that_cannot_load(tmp_path, page_png, capsys):
    code = main([str(page_png), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--model" in err[0]
    assert "no-model" in err[0]


def test_cli_pages_and_tasks(tiny_v2_dir, three_page_pdf, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(
        [
            str(three_page_pdf),
            "--model",
            str(tiny_v2_dir),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--task",
            "free",
            "--pages",
            "2-3",
            "--max-new-tokens",
            "3",
            "--json",
            "--stdout",
        ]
    )
    assert code == 0
    data = json.loads((out / "doc.json").read_text())
    assert [p["page"] for p in data["pages"]] == [1, 2]
    assert all(p["task"] == "free" and p["vision_tokens"] == 1121 for p in data["pages"])
    assert capsys.readouterr().out.count("<--- Page Split --->") == 1
    assert main([str(three_page_pdf), "--task", "locate", "--out", str(out)]) == 2


def test_cli_crops_and_boxes_from_a_real_output(tmp_path, capsys):
    sample = json.loads(SAMPLES.read_text(encoding="utf-8").splitlines()[0])
    image = tmp_path / "news.png"
    noise_image(*sample["image_size"], seed=4).save(image)
    out = tmp_path / "o"
    code = main(
        [str(image), "--out", str(out), "--crops", "--boxes", "--json"],
        engine=ScriptedEngine(sample["raw"]),
    )
    assert code == 0
    md = (out / "news.md").read_text()
    assert "![](news_images/fig_0.jpg)" in md
    assert (out / "news_images" / "fig_0.jpg").is_file()
    assert (out / "news.boxes.png").is_file()
    blocks = json.loads((out / "news.json").read_text())["pages"][0]["blocks"]
    assert [b["label"] for b in blocks] == sample["expect"]["labels"]


def test_console_script_is_installed():
    proc = subprocess.run(
        [sys.executable, "-m", "langchain_deepseek_ocr.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert "--resolution" in proc.stdout
