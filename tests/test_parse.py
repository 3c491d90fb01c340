"""Tests of the output parser: real samples first, then the format in general."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from langchain_deepseek_ocr._boxes import Box
from langchain_deepseek_ocr._errors import ConfigurationError
from langchain_deepseek_ocr._parse import (
    BOS,
    EOS,
    PAD,
    ParsedOutput,
    detect_repetition,
    figure_boxes,
    parse_output,
    strip_special,
)
from langchain_deepseek_ocr._result import LayoutBlock

# --------------------------------------------------------------------------------------------
# Real outputs.

_SAMPLES_NAME = "outputs.jsonl"


def _samples_path() -> Path | None:
    here = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / _SAMPLES_NAME
    if here.is_file():
        return here
    env = os.environ.get("DEEPSEEK_OCR_SAMPLES")
    if env:
        path = Path(env)
        if path.is_dir():
            path = path / _SAMPLES_NAME
        if path.is_file():
            return path
    return None


def _load_samples() -> list[dict]:
    path = _samples_path()
    if path is None:
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


_SAMPLES = _load_samples()
_MISSING = (
    "DeepSeek-OCR samples not found: expected shared/samples/outputs.jsonl next to the repository "
    "(../shared/samples/outputs.jsonl) or a path in $DEEPSEEK_OCR_SAMPLES"
)


def _sample_params() -> list:
    if not _SAMPLES:
        return [pytest.param(None, id="samples-missing")]
    return [pytest.param(s, id=s["id"]) for s in _SAMPLES]


def _assert_clean(text: str) -> None:
    for tag in ("<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>", BOS, EOS, PAD):
        assert tag not in text


def test_samples_found() -> None:
    if not _SAMPLES:
        pytest.fail(_MISSING)
    assert len(_SAMPLES) >= 8


@pytest.mark.parametrize("sample", _sample_params())
def test_sample(sample: dict | None) -> None:
    if sample is None:
        pytest.fail(_MISSING)
    size = tuple(sample["image_size"]) if sample["image_size"] else None
    out = parse_output(sample["raw"], size)
    expect = sample["expect"]
    assert [b.label for b in out.blocks] == expect["labels"]
    assert sum(len(b.boxes) for b in out.blocks if b.complete) == expect["n_boxes"]
    assert out.repetition is expect["repetition"]
    assert out.truncated is expect["truncated"]
    _assert_clean(out.text)
    for block in out.blocks:
        _assert_clean(block.text)
        assert len(block.pixel_boxes) == (len(block.boxes) if size else 0)
        for box in block.boxes:
            assert 0 <= box.x1 <= box.x2 <= 999
            assert 0 <= box.y1 <= box.y2 <= 999


def _sample(sample_id: str) -> dict:
    if not _SAMPLES:
        pytest.fail(_MISSING)
    return next(s for s in _SAMPLES if s["id"] == sample_id)


def test_sample_y1005_is_clamped_and_pixel_boxes_fill_the_image() -> None:
    sample = _sample("v1-hf-photo-single-image-y1005")
    out = parse_output(sample["raw"], (626, 626))
    assert out.blocks[0].boxes == [Box(0, 0, 999, 999)]
    assert out.blocks[0].pixel_boxes == [(0, 0, 626, 626)]
    assert out.text == ""


def test_sample_table_keeps_html_and_drops_tags() -> None:
    out = parse_output(_sample("seed-markdown-table")["raw"])
    assert out.text.startswith("Nasdaq & AMEX\n\nStocks in bold")
    assert '<td colspan="3">52-week</td>' in out.text
    assert out.text.endswith("</table>")
    assert "\n\n\n" not in out.text
    assert out.blocks[2].label == "image"
    assert out.blocks[2].text == ""
    assert out.blocks[0].text == "Nasdaq & AMEX"


def test_sample_grounded_ocr_labels_become_text() -> None:
    out = parse_output(_sample("v1-issue75-ocr-this-image-text-refs")["raw"])
    assert out.text == "一段接一段\n越过高峰\n另一峰却又见"
    assert [b.text for b in out.blocks] == ["", "", ""]


def test_sample_free_ocr_strips_bos() -> None:
    out = parse_output(_sample("seed-free-ocr-santander")["raw"])
    assert out.blocks == []
    assert out.text.startswith('"""\n    Banco Santander, S.A.')


# --------------------------------------------------------------------------------------------
# Special strings.


def test_special_strings_use_fullwidth_bars() -> None:
    assert BOS == "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
    assert EOS == "<\uff5cend\u2581of\u2581sentence\uff5c>"
    assert PAD == "<\uff5c\u2581pad\u2581\uff5c>"


def test_strip_special_everywhere_and_keeps_other_tags() -> None:
    raw = f"{BOS}<|ref|>text<|/ref|>a{PAD}b<td>x</td>{EOS}{PAD}{PAD}"
    assert strip_special(raw) == "<|ref|>text<|/ref|>ab<td>x</td>"


def test_parse_strips_special_and_grounding_token() -> None:
    raw = f"{BOS}<|grounding|><|ref|>title<|/ref|><|det|>[[1,2,3,4]]<|/det|>\n# Hi{EOS}{PAD}"
    out = parse_output(raw)
    assert out.text == "# Hi"
    assert out.blocks[0].text == "# Hi"


# --------------------------------------------------------------------------------------------
# Blocks and boxes.


def test_multi_box_ref() -> None:
    raw = "<|ref|>text<|/ref|><|det|>[[10, 20, 30, 40], [50, 60, 70, 80]]<|/det|>\nHello"
    (block,) = parse_output(raw).blocks
    assert block.boxes == [Box(10, 20, 30, 40), Box(50, 60, 70, 80)]
    assert block.text == "Hello"
    assert block.complete


def test_block_text_runs_to_next_ref() -> None:
    raw = (
        "<|ref|>title<|/ref|><|det|>[[0,0,9,9]]<|/det|>\n# T\n\n"
        "<|ref|>text<|/ref|><|det|>[[0,10,9,19]]<|/det|>\nline one\nline two\n\n"
    )
    out = parse_output(raw)
    assert [b.text for b in out.blocks] == ["# T", "line one\nline two"]
    assert out.text == "# T\n\nline one\nline two"


def test_truncated_det_at_end() -> None:
    raw = "<|ref|>text<|/ref|><|det|>[[1,2,3,4]]<|/det|>\nok\n<|ref|>table<|/ref|><|det|>[[5, 6, 7"
    out = parse_output(raw)
    assert [b.label for b in out.blocks] == ["text", "table"]
    assert out.blocks[1].complete is False
    assert out.blocks[1].boxes == []
    assert out.truncated
    assert out.text == "ok"


def test_truncated_mid_list_keeps_complete_boxes() -> None:
    raw = "<|ref|>text<|/ref|><|det|>[[10,20,30,40], [50,60,70,80], [90,100"
    (block,) = parse_output(raw).blocks
    assert block.boxes == [Box(10, 20, 30, 40), Box(50, 60, 70, 80)]
    assert block.complete is False


def test_truncated_last_box_without_bracket_is_dropped() -> None:
    # The last number may itself be cut ("8" of "80"): no closing bracket, no box.
    raw = "<|ref|>text<|/ref|><|det|>[[10,20,30,40], [50,60,70,8"
    out = parse_output(raw)
    assert out.blocks[0].boxes == [Box(10, 20, 30, 40)]
    assert out.truncated


def test_det_open_but_list_complete_at_end_is_truncated() -> None:
    out = parse_output("<|ref|>image<|/ref|><|det|>[[10,20,30,40]]")
    assert out.blocks[0].boxes == [Box(10, 20, 30, 40)]
    assert out.blocks[0].complete is False
    assert out.truncated


def test_truncated_inside_ref() -> None:
    out = parse_output("<|ref|>text<|/ref|><|det|>[[1,2,3,4]]<|/det|>\nHello\n<|ref|>tab")
    assert [b.label for b in out.blocks] == ["text", "tab"]
    assert out.blocks[1].complete is False
    assert out.truncated
    assert out.text == "Hello"  # a cut label is not recognised text


def test_det_without_ref() -> None:
    out = parse_output("Intro\n<|det|>[[1,2,3,4]]<|/det|>\nbody")
    (block,) = out.blocks
    assert block.label == ""
    assert block.boxes == [Box(1, 2, 3, 4)]
    assert block.text == "body"
    assert out.text == "Intro\n\nbody"
    assert not out.truncated


def test_ref_without_det() -> None:
    raw = "<|ref|>title<|/ref|>\n# Heading\n<|ref|>text<|/ref|><|det|>[[1,2,3,4]]<|/det|>\nx"
    out = parse_output(raw)
    assert [b.label for b in out.blocks] == ["title", "text"]
    assert out.blocks[0].boxes == []
    assert out.blocks[0].complete
    assert out.blocks[0].text == "# Heading"
    assert out.text == "# Heading\n\nx"
    assert not out.truncated


def test_ref_and_det_separated_by_whitespace() -> None:
    (block,) = parse_output("<|ref|>text<|/ref|>\n <|det|>[[1,2,3,4]]<|/det|>\nx").blocks
    assert block.boxes == [Box(1, 2, 3, 4)]
    assert block.text == "x"


def test_missing_det_close_mid_output() -> None:
    raw = (
        "<|ref|>text<|/ref|><|det|>[[1,2,3,4]]\n2024 report\n"
        "<|ref|>text<|/ref|><|det|>[[5,6,7,8]]<|/det|>"
    )
    out = parse_output(raw)
    assert out.blocks[0].boxes == [Box(1, 2, 3, 4)]
    assert out.blocks[0].text == "2024 report"
    assert out.blocks[0].complete
    assert not out.truncated


@pytest.mark.parametrize(
    ("det", "boxes"),
    [
        ("[[1, 2, 3, 4]]", [(1, 2, 3, 4)]),
        ("[ [ 1 , 2 , 3 , 4 ] ,[5,6,7,8] ]", [(1, 2, 3, 4), (5, 6, 7, 8)]),
        ("[1, 2, 3, 4]", [(1, 2, 3, 4)]),
        ("[[1,2,3,4],[5,6,7,8]", [(1, 2, 3, 4), (5, 6, 7, 8)]),
        ("[[1,2,3,4] [5,6,7,8]]", [(1, 2, 3, 4), (5, 6, 7, 8)]),
        ("[[1,2,3,4,[5,6,7,8]]", [(1, 2, 3, 4), (5, 6, 7, 8)]),
        ("1, 2, 3, 4", [(1, 2, 3, 4)]),
        ("((1, 2, 3, 4), (5, 6, 7, 8))", [(1, 2, 3, 4), (5, 6, 7, 8)]),
        ("[[1.6, 2.4, 3, 4]]", [(2, 2, 3, 4)]),
        ("[[30, 40, 10, 20]]", [(10, 20, 30, 40)]),
        ("[[-5, 0, 1005, 999]]", [(0, 0, 999, 999)]),
        ("[[1,2,3]]", []),
        ("[[1,2,3],[4,5,6,7]]", [(4, 5, 6, 7)]),
        ("", []),
        ("__import__('os').system('echo pwned')", []),
    ],
)
def test_box_lists(det: str, boxes: list[tuple[int, int, int, int]]) -> None:
    (block,) = parse_output(f"<|ref|>text<|/ref|><|det|>{det}<|/det|>\nx").blocks
    assert [tuple(b.as_list()) for b in block.boxes] == boxes
    assert block.complete


def test_pixel_boxes_use_divisor_999() -> None:
    raw = "<|ref|>a<|/ref|><|det|>[[0, 0, 999, 999], [500, 250, 999, 500]]<|/det|>"
    out = parse_output(raw, (1000, 1000))
    # 999 is the full side; 500 on 1000 px is int(500 / 999 * 1000) = 500, 250 -> 250.
    assert out.blocks[0].pixel_boxes == [(0, 0, 1000, 1000), (500, 250, 1000, 500)]
    assert out.blocks[0].pixel_boxes[1] == Box(500, 250, 999, 500).to_pixels(1000, 1000)
    assert parse_output(raw, (640, 480)).blocks[0].pixel_boxes[0] == (0, 0, 640, 480)
    assert parse_output(raw).blocks[0].pixel_boxes == []


def test_clamp_1005() -> None:
    out = parse_output("<|ref|>image<|/ref|><|det|>[[0, 0, 999, 1005]]<|/det|>", (640, 480))
    assert out.blocks[0].boxes[0].y2 == 999
    assert out.blocks[0].pixel_boxes == [(0, 0, 640, 480)]


def test_bad_image_size() -> None:
    with pytest.raises(ConfigurationError):
        parse_output("x", (0, 10))


def test_cjk_text_and_labels() -> None:
    raw = (
        "<|ref|>title<|/ref|><|det|>[[1,2,3,4]]<|/det|>\n# 标题：测试\n\n"
        "<|ref|>text<|/ref|><|det|>[[1,5,3,9]]<|/det|>\n中文段落，含全角标点。"
    )
    out = parse_output(raw)
    assert out.text == "# 标题：测试\n\n中文段落，含全角标点。"
    assert not out.repetition


# --------------------------------------------------------------------------------------------
# Clean text.


def test_figure_links_list() -> None:
    raw = (
        "<|ref|>image<|/ref|><|det|>[[0,0,10,10]]<|/det|>\n"
        "<|ref|>image_caption<|/ref|><|det|>[[0,11,10,12]]<|/det|>\n<center>Fig 1</center>\n\n"
        "<|ref|>image<|/ref|><|det|>[[0,20,10,30]]<|/det|>\n\n"
        "<|ref|>image<|/ref|><|det|>[[0,40,10,50]]<|/det|>\n"
    )
    out = parse_output(raw, figure_links=["a.jpg", "b.jpg"])
    assert out.text == "![](a.jpg)\n\n<center>Fig 1</center>\n\n![](b.jpg)"
    assert parse_output(raw).text == "<center>Fig 1</center>"


def test_figure_links_callable_and_multi_box_images() -> None:
    raw = (
        "<|ref|>image<|/ref|><|det|>[[0,0,10,10], [20,20,30,30]]<|/det|>\n"
        "<|ref|>text<|/ref|><|det|>[[0,40,10,50]]<|/det|>\nbody\n"
        "<|ref|>image<|/ref|><|det|>[[5,5,5,9], [0,60,10,70]]<|/det|>\n"
    )
    out = parse_output(raw, figure_links=lambda i: f"images/3_{i}.jpg")
    assert out.text == ("![](images/3_0.jpg)\n![](images/3_1.jpg)\n\nbody\n![](images/3_2.jpg)")
    # The zero-width box [5,5,5,9] is not a figure: numbering skips it.
    assert [(i, b.as_list()) for i, b in figure_boxes(out.blocks)] == [
        (0, [0, 0, 10, 10]),
        (0, [20, 20, 30, 30]),
        (2, [0, 60, 10, 70]),
    ]


def test_coloneqq_and_newlines() -> None:
    raw = (
        "<|ref|>equation<|/ref|><|det|>[[1,2,3,4]]<|/det|>\n"
        "\\[a \\coloneqq b \\eqqcolon c\\]\n\n\n\n\nend"
    )
    out = parse_output(raw)
    assert out.text == "\\[a := b =: c\\]\n\nend"


def test_layout_label_with_empty_body_adds_nothing() -> None:
    out = parse_output("<|ref|>table<|/ref|><|det|>[[1,2,3,4]]<|/det|>\n")
    assert out.text == ""


def test_locate_output_text_is_the_ref() -> None:
    out = parse_output("<|ref|>the hat<|/ref|><|det|>[[220, 80, 820, 744]]<|/det|>")
    assert out.text == "the hat"
    assert out.blocks[0].label == "the hat"


def test_grounded_ocr_refs_back_to_back_are_separate_lines() -> None:
    raw = (
        "<|ref|>Hello<|/ref|><|det|>[[1,2,3,4]]<|/det|>"
        "<|ref|>World<|/ref|><|det|>[[5,6,7,8]]<|/det|>"
    )
    assert parse_output(raw).text == "Hello\nWorld"


def test_plain_text_without_tags() -> None:
    out = parse_output("  Just text.\n\n\n\nMore.  ")
    assert out == ParsedOutput(
        text="Just text.\n\nMore.", blocks=[], repetition=False, truncated=False
    )


def test_finish_reason_length() -> None:
    assert parse_output("Some text", finish_reason="length").truncated
    assert not parse_output("Some text", finish_reason="stop").truncated
    assert not parse_output("Some text").truncated


# --------------------------------------------------------------------------------------------
# Repetition: loops that must be flagged.


def _block(label: str, text: str, box: tuple[int, int, int, int]) -> str:
    return f"<|ref|>{label}<|/ref|><|det|>[[{', '.join(map(str, box))}]]<|/det|>\n{text}\n\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Intro\n\n" + "This is the same line of text again.\n\n" * 15, id="line"),
        pytest.param("# Notes\n\n" + "1." * 2000, id="1.1.1"),
        pytest.param("OCR" * 300, id="OCROCR"),
        pytest.param(
            "Start. " + "The quick brown fox jumps over the lazy dog. " * 20, id="sentence"
        ),
        pytest.param("abc def " + "xyzw" * 400 + " tail", id="char-in-line"),
        pytest.param("标题\n\n" + "的" * 500, id="cjk-char"),
        pytest.param("越过高峰另一峰却又见，" * 40, id="cjk-phrase"),
        pytest.param(
            "# Header\n\n" + "## Section A\nSome words here\n\n## Section B\nOther words\n\n" * 12,
            id="multi-line-block",
        ),
        pytest.param(
            "<table>" + "<tr><td>1</td><td>2</td></tr>" * 300 + "</table>", id="table-row"
        ),
        pytest.param("<table>" + "<td></td>" * 3000, id="empty-cells-to-the-limit"),
        pytest.param("Total\n" + "-" * 5000, id="dashes-to-the-limit"),
        pytest.param(
            "\n".join(f"Item {i}\nThe very same repeated line of the page" for i in range(20)),
            id="line-non-consecutive",
        ),
    ],
)
def test_loops_are_flagged(text: str) -> None:
    assert detect_repetition(text)
    assert parse_output(text).repetition


def test_same_block_moving_box_is_flagged() -> None:
    raw = _block("text", "NO.", (750, 63, 780, 73))
    raw += "".join(_block("text", "1", (50, y, 92, y + 10)) for y in range(120, 1000, 30))
    out = parse_output(raw)
    assert out.repetition
    assert not out.truncated
    # The text alone ("1" lines) is not enough evidence: the blocks are.
    assert not detect_repetition(out.text)
    assert detect_repetition(out.text, out.blocks)


def test_same_block_identical_boxes_is_flagged() -> None:
    raw = _block("title", "# Intro", (10, 10, 900, 40))
    raw += _block("text", "Some paragraph text.", (10, 50, 900, 90)) * 4
    assert parse_output(raw).repetition


def test_same_figure_identical_boxes_is_flagged() -> None:
    raw = _block("image", "", (10, 10, 500, 500)) * 3
    assert parse_output(raw).repetition


def test_alternating_blocks_loop_is_flagged() -> None:
    raw = "".join(
        _block("text", "Name:", (10, y, 100, y + 10))
        + _block("text", "____", (110, y, 500, y + 10))
        for y in range(0, 900, 45)
    )
    assert parse_output(raw).repetition


def test_grounded_ocr_loop_is_flagged() -> None:
    raw = "".join(
        _block("一段接一段", "", (500, y, 600, y + 20)).strip() for y in range(0, 990, 30)
    )
    out = parse_output(raw)
    assert out.repetition


# --------------------------------------------------------------------------------------------
# Repetition: legitimate outputs that must not be flagged.


def _big_table() -> str:
    rows = "".join(
        f"<tr><td>{i}</td><td></td><td></td><td>{i * 3.7:.2f}</td><td>Stock {i}</td><td></td></tr>"
        for i in range(150)
    )
    return '<table><tr><td colspan="6">Prices</td></tr>' + rows + "</table>"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_big_table(), id="big-html-table"),
        pytest.param(
            "<table>"
            + "<tr>"
            + "<td></td>" * 6
            + "</tr>" * 1
            + ("<tr>" + "<td></td>" * 6 + "</tr>") * 60
            + "</table>",
            id="blank-ledger-table",
        ),
        pytest.param(
            "<table>" + "".join(f"<tr><td>{i % 10}</td></tr>" for i in range(100)) + "</table>",
            id="digits-column",
        ),
        pytest.param("<table><tr>" + "<td>0</td>" * 40 + "</tr></table>", id="zeros-row"),
        pytest.param(
            "\n".join(f"{i}. Buy some milk and bread" for i in range(1, 41)), id="numbered-list"
        ),
        pytest.param(
            "# Annual Report 2024\n\nSome text about the year.\n\n"
            "# Annual Report 2024\n\nMore text.",
            id="header-twice",
        ),
        pytest.param("ha ha ha ha ha ha", id="short"),
        pytest.param("Hello world\nHello world\nHello world", id="short-lines"),
        pytest.param("", id="empty"),
        pytest.param(
            "Contents\n"
            + "\n".join(f"Chapter {i} " + "." * 80 + f" {i * 10}" for i in range(1, 30)),
            id="dot-leaders",
        ),
        pytest.param(
            "\\[\\begin{pmatrix} 1 & 0 & 0 \\\\ 0 & 1 & 0 \\\\ 0 & 0 & 1 \\end{pmatrix}\\]",
            id="matrix",
        ),
        pytest.param(
            "\n".join(f"1.{i}.{j} Section title" for i in range(1, 6) for j in range(1, 5)),
            id="section-numbers",
        ),
    ],
)
def test_legitimate_repetition_is_not_flagged(text: str) -> None:
    assert not detect_repetition(text)
    assert not parse_output(text).repetition


def test_grounded_page_with_repeated_labels_is_not_flagged() -> None:
    raw = "".join(
        _block("text", f"Paragraph number {i} with its own words.", (10, 20 * i, 900, 20 * i + 15))
        for i in range(40)
    )
    raw += "".join(_block("image", "", (10 + i, 10, 100 + i, 90)) for i in range(10))
    assert not parse_output(raw).repetition


def test_few_identical_text_blocks_are_not_flagged() -> None:
    blocks = [
        LayoutBlock(label="text", text="Yes", boxes=[Box(10, y, 40, y + 10)])
        for y in range(0, 60, 12)
    ]
    blocks += [
        LayoutBlock(label="text", text=f"Question {i}", boxes=[Box(50, 10 * i, 400, 10 * i + 8)])
        for i in range(20)
    ]
    assert not detect_repetition("", blocks)
