"""Parsing DeepSeek-OCR output: the one place where the model's markup is read.

DeepSeek-OCR's grounded prompts (``<|grounding|>Convert the document to markdown.``,
``<|grounding|>OCR this image.``, ``Locate <|ref|>X<|/ref|> in the image.``) answer with
blocks of the form::

    <|ref|>LABEL<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>
    content of the block (markdown, HTML tables, LaTeX)

``LABEL`` is a layout class (``title``, ``text``, ``table``, ``image`` ...; an open set) for
markdown output, and usually the recognised or searched text itself for ``ocr`` and
``locate`` output. Boxes are integers on a 0-999 grid relative to the original image (see
:mod:`langchain_deepseek_ocr._boxes`). Ungrounded prompts (``Free OCR.``) answer with plain
text. Raw output may also carry the tokenizer's BOS/EOS/pad strings, which are removed.

The model is not always well behaved: generation can stop in the middle of a box list (the
token limit), a ``<|det|>`` can come without its ``<|ref|>``, box lists can be malformed, and
greedy decoding sometimes falls into a loop. :func:`parse_output` tolerates all of these and
reports ``truncated`` and ``repetition`` instead of failing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate

from pydantic import BaseModel, Field

from langchain_deepseek_ocr._boxes import Box
from langchain_deepseek_ocr._errors import ConfigurationError
from langchain_deepseek_ocr._result import LayoutBlock

__all__ = [
    "BOS",
    "EOS",
    "LAYOUT_LABELS",
    "PAD",
    "ParsedOutput",
    "detect_repetition",
    "figure_boxes",
    "parse_output",
    "strip_special",
]

BOS = "<｜begin▁of▁sentence｜>"
"""The tokenizer's begin-of-sentence string (fullwidth bars U+FF5C, U+2581)."""
EOS = "<｜end▁of▁sentence｜>"
"""The tokenizer's end-of-sentence string."""
PAD = "<｜▁pad▁｜>"
"""The tokenizer's padding string."""

LAYOUT_LABELS: frozenset[str] = frozenset(
    {
        # Seen in real DeepSeek-OCR markdown output.
        "title",
        "sub_title",
        "text",
        "image",
        "image_caption",
        "table",
        "table_caption",
        "table_footnote",
        "equation",
        # Reported by third parties or common layout classes of document-parsing datasets.
        "header",
        "footer",
        "footnote",
        "page_number",
        "page_header",
        "page_footer",
        "section_header",
        "doc_title",
        "paragraph_title",
        "figure",
        "figure_caption",
        "figure_title",
        "image_footnote",
        "chart",
        "chart_caption",
        "caption",
        "formula",
        "formula_caption",
        "equation_caption",
        "interline_equation",
        "list",
        "list_item",
        "code",
        "code_caption",
        "algorithm",
        "abstract",
        "reference",
        "aside_text",
        "header_image",
        "footer_image",
        "seal",
    }
)
"""Labels treated as layout classes rather than recognised text (compared case-sensitively).

A grounded block whose label is *not* in this set and that has no content of its own (the
``ocr``/``locate`` style, ``<|ref|>recognised words<|/ref|><|det|>...<|/det|>``) contributes
its label to the clean text. The set only decides that; labels themselves stay an open set.
"""

_IMAGE_LABEL = "image"

# ---------------------------------------------------------------------------------------------
# Repetition thresholds. A "unit" is one period of a loop; "content" counts letters and digits
# only (punctuation, whitespace and HTML tags weigh nothing), so dot leaders, rules and runs of
# empty table cells never count as content.

LOOP_MIN_REPEATS = 5
"""Fewest consecutive copies of a unit (in the text) that can make a loop."""
LOOP_MIN_CONTENT = 200
"""Fewest letters/digits repeated beyond the first copy for a loop to count.

Absolute, so a short output needs proportionally more evidence: ``1.`` must repeat 200
times, ``OCR`` 67 times, a 50-character sentence 5 times.
"""
LOOP_LONG_MIN_REPEATS = 3
"""Fewest copies when a long unit is repeated (see :data:`LOOP_LONG_MIN_CONTENT`)."""
LOOP_LONG_MIN_CONTENT = 1500
"""Letters/digits repeated beyond the first copy that make 3 copies of a long unit a loop."""
LOOP_ANY_MIN_REPEATS = 100
"""Fewest copies of a content-free unit (punctuation, markup) that can make a loop."""
LOOP_ANY_MIN_CHARS = 4000
"""Fewest characters a content-free loop must cover (a blank 60-row ledger table must pass)."""
LINE_REPEAT_MIN_COUNT = 10
"""Fewest occurrences, anywhere, of one line for the non-consecutive line rule."""
LINE_REPEAT_MIN_CONTENT = 16
"""Fewest letters/digits a line needs to be counted by the non-consecutive line rule."""
LINE_REPEAT_MIN_FRACTION = 0.25
"""Share of the non-blank lines that copies of one line must make up for that rule."""
BLOCK_MAX_PERIOD = 4
"""Longest cycle of blocks (A B A B ... is period 2) the block rules look for."""
BLOCK_LOOP_MIN_REPEATS = 8
"""Copies of the same block content (label + text) that make a loop if they are at least
:data:`BLOCK_LOOP_MIN_FRACTION` of all blocks."""
BLOCK_LOOP_MIN_FRACTION = 0.5
"""See :data:`BLOCK_LOOP_MIN_REPEATS`."""
BLOCK_LOOP_ABS_REPEATS = 16
"""Copies of the same block content that make a loop whatever the number of blocks."""
IDENTICAL_BLOCK_MIN_REPEATS = 3
"""Consecutive copies of a block with the same label, text *and boxes* that make a loop."""

_KGRAM = 4  # tokens in the k-gram that proposes a loop period
_TOKEN_RE = re.compile(r"<[^<>\s][^<>]{0,80}>|[^\W_]{1,12}|\S")
_WORD_RE = re.compile(r"[^\W_]+")

# ---------------------------------------------------------------------------------------------
# Markup.

_REF_OPEN = "<|ref|>"
_REF_CLOSE = "<|/ref|>"
_DET_OPEN = "<|det|>"
_DET_CLOSE = "<|/det|>"
_OPEN_RE = re.compile(r"<\|(ref|det)\|>")
_STRAY_TAG_RE = re.compile(r"<\|/?(?:ref|det)\|>|<\|grounding\|>")
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in (BOS, EOS, PAD)))
_MANY_NEWLINES_RE = re.compile(r"\n(?:[ \t]*\n){2,}")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_BRACKET_SPLIT_RE = re.compile(r"([\[\]()])")
# The box-list part at the start of a det whose closing tag is missing.
_LIST_PREFIX_RE = re.compile(r"\s*[\[(][\d\s,.\-\[\]()]*")
_SPACE_RE = re.compile(r"\s*")


def strip_special(text: str) -> str:
    """Remove the tokenizer's BOS, EOS and pad strings wherever they occur.

    Every other tag (``<|ref|>``, ``<|det|>``, ``<|grounding|>``, ``<td>`` ...) is kept.

    Args:
        text: Model output as decoded with ``skip_special_tokens=False``.

    Returns:
        The text without BOS/EOS/pad strings.
    """
    return _SPECIAL_RE.sub("", text)


class ParsedOutput(BaseModel):
    """What :func:`parse_output` reads from one model output.

    Attributes:
        text: Clean markdown: grounding tags removed, figures as ``![](link)`` when links
            were given.
        blocks: The grounded blocks in the model's reading order.
        repetition: The output is a degenerate loop (see :func:`detect_repetition`).
        truncated: The output was cut off (``finish_reason == "length"``, or it ends
            inside a ref or a box list).
    """

    text: str = Field(description="Clean markdown: grounding tags removed.")
    blocks: list[LayoutBlock] = Field(default_factory=list, description="Grounded blocks.")
    repetition: bool = Field(default=False, description="The output is a degenerate loop.")
    truncated: bool = Field(default=False, description="The output was cut off.")


class _RawBlock:
    """A block as found in the text, before it becomes a :class:`LayoutBlock`."""

    __slots__ = ("body", "boxes", "complete", "label", "label_closed")

    def __init__(self, label: str, *, label_closed: bool) -> None:
        self.label = label
        self.label_closed = label_closed
        self.boxes: list[Box] = []
        self.complete = label_closed
        self.body = ""


# ---------------------------------------------------------------------------------------------
# Box lists.


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _boxes_from_json(value: object) -> list[Box] | None:
    """Boxes from a decoded JSON value, or None if it is not a clean list of boxes."""
    if not isinstance(value, list):
        return None
    if value and all(_is_number(v) for v in value):
        if len(value) % 4:
            return None
        return [Box(value[i : i + 4]) for i in range(0, len(value), 4)]
    boxes = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 4 and all(_is_number(v) for v in item)):
            return None
        boxes.append(Box(item))
    return boxes


def _boxes_tolerant(content: str, *, closed_only: bool) -> list[Box]:
    """Boxes from a malformed or cut-off list: every bracketed group of 4 numbers.

    A group is the text between two brackets (``[]`` or ``()``); one holding a multiple of
    4 numbers gives that many boxes, any other group is skipped. With ``closed_only`` (a
    list cut off by the token limit) a group counts only if a closing bracket follows it,
    since its last number may itself be cut.
    """
    parts = _BRACKET_SPLIT_RE.split(content)
    boxes: list[Box] = []
    for i in range(0, len(parts), 2):
        numbers = _NUMBER_RE.findall(parts[i])
        if not numbers or len(numbers) % 4:
            continue
        follower = parts[i + 1] if i + 1 < len(parts) else ""
        if closed_only and follower not in ("]", ")"):
            continue
        values = [float(n) for n in numbers]
        boxes.extend(Box(values[j : j + 4]) for j in range(0, len(values), 4))
    return boxes


def _parse_boxes(content: str, *, cut_off: bool = False) -> list[Box]:
    """The boxes of one det's content; never evaluates code.

    Args:
        content: What stands between ``<|det|>`` and ``<|/det|>``.
        cut_off: The list was cut off (no closing tag at the end of the output): only the
            boxes whose closing bracket was written are kept.

    Returns:
        The boxes, clamped to the grid; an empty list if none can be read.
    """
    if not cut_off:
        try:
            boxes = _boxes_from_json(json.loads(content))
        except ValueError:
            boxes = None
        if boxes is not None:
            return boxes
    return _boxes_tolerant(content, closed_only=cut_off)


def _brackets_balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
    return depth == 0 and any(ch in "])" for ch in text)


# ---------------------------------------------------------------------------------------------
# Scanning.


def _scan(text: str) -> tuple[str, list[_RawBlock]]:
    """Split the (special-free) output into its preamble and raw blocks."""
    n = len(text)
    match = _OPEN_RE.search(text)
    preamble = text[: match.start()] if match else text
    blocks: list[_RawBlock] = []
    while match is not None:
        cur = match.end()
        next_open = _OPEN_RE.search(text, cur)
        if match.group(1) == "ref":
            close = text.find(_REF_CLOSE, cur, next_open.start() if next_open else n)
            if close != -1:
                block = _RawBlock(text[cur:close].strip(), label_closed=True)
                cur = close + len(_REF_CLOSE)
            elif next_open is None:  # cut off inside the label
                block = _RawBlock(text[cur:].strip(), label_closed=False)
                cur = n
            else:  # the closing tag is missing but the output goes on: be tolerant
                block = _RawBlock(text[cur : next_open.start()].strip(), label_closed=True)
                cur = next_open.start()
            # A det belongs to the ref if only whitespace separates them.
            det_at = _SPACE_RE.match(text, cur).end()
            has_det = text.startswith(_DET_OPEN, det_at)
        else:  # a det without a ref
            block = _RawBlock("", label_closed=True)
            det_at = match.start()
            has_det = True
        if has_det and block.label_closed:
            cur = _read_det(text, det_at + len(_DET_OPEN), block)
        next_open = _OPEN_RE.search(text, cur)
        end = next_open.start() if next_open else n
        block.body = text[cur:end]
        blocks.append(block)
        match = next_open
    return preamble, blocks


def _read_det(text: str, start: int, block: _RawBlock) -> int:
    """Read the box list that starts at ``start`` into ``block``; return where it ends."""
    n = len(text)
    next_open = _OPEN_RE.search(text, start)
    close = text.find(_DET_CLOSE, start, next_open.start() if next_open else n)
    if close != -1:
        block.boxes = _parse_boxes(text[start:close])
        return close + len(_DET_CLOSE)
    region_end = next_open.start() if next_open else n
    region = text[start:region_end]
    prefix = _LIST_PREFIX_RE.match(region)
    listed = prefix.group(0) if prefix else ""
    if next_open is None and not region[len(listed) :].strip():
        # The output ends inside the det: cut off by the token limit.
        block.boxes = _parse_boxes(listed, cut_off=True)
        block.complete = False
        return n
    # The closing tag is missing but the output goes on after the list, which ends at its
    # last closing bracket (what follows it is the block's content).
    listed = listed[: max(listed.rfind("]"), listed.rfind(")")) + 1]
    block.boxes = _parse_boxes(listed, cut_off=not _brackets_balanced(listed))
    block.complete = _brackets_balanced(listed)
    return start + len(listed)


# ---------------------------------------------------------------------------------------------
# Clean text.


def _clean(fragment: str) -> str:
    """Remove stray grounding tags, apply upstream's LaTeX fixes, collapse blank lines."""
    out = _STRAY_TAG_RE.sub("", fragment)
    out = out.replace("\\coloneqq", ":=").replace("\\eqqcolon", "=:")
    return _MANY_NEWLINES_RE.sub("\n\n", out).strip()


def _is_text_label(label: str) -> bool:
    """True when a label is recognised text rather than a layout class."""
    return bool(label) and label not in LAYOUT_LABELS


def figure_boxes(
    blocks: Sequence[LayoutBlock], labels: Iterable[str] = (_IMAGE_LABEL,)
) -> list[tuple[int, Box]]:
    """The figures of a page, in the order that numbers them.

    Every box of every block whose label is in ``labels`` is one figure, in reading order
    (a block with several boxes gives several figures, one after the other); boxes with no
    area on the grid are skipped. :func:`parse_output` gives the i-th figure the link
    ``figure_links[i]`` and ``save_crops`` saves it as ``{prefix}_{i}.jpg``, so the two
    always agree.

    Args:
        blocks: The page's blocks.
        labels: Labels that mark figures.

    Returns:
        ``(block_index, box)`` pairs; the position in the list is the figure number.
    """
    wanted = frozenset(labels)
    return [
        (index, box)
        for index, block in enumerate(blocks)
        if block.label in wanted
        for box in block.boxes
        if box.area > 0
    ]


def _link(figure_links: Sequence[str] | Callable[[int], str], index: int) -> str | None:
    if callable(figure_links):
        return figure_links(index)
    return figure_links[index] if index < len(figure_links) else None


def parse_output(
    raw: str,
    image_size: tuple[int, int] | None = None,
    *,
    finish_reason: str | None = None,
    figure_links: Sequence[str] | Callable[[int], str] | None = None,
) -> ParsedOutput:
    r"""Parse one DeepSeek-OCR output into clean markdown and grounded blocks.

    Blocks: each ``<|ref|>LABEL<|/ref|>`` followed by ``<|det|>[[...], ...]<|/det|>`` is a
    block with the label (verbatim, surrounding whitespace removed), its boxes and the
    text up to the next ref (stripped, tags removed). A ref without a det is a block without
    boxes; a det without a ref is a block with the label ``""``; a ref or det cut off at the
    end of the output is a block with ``complete=False`` and the boxes that were fully
    written. Box lists are read with :func:`json.loads`, falling back to a tolerant reader
    (groups of four numbers between brackets) for malformed lists.

    Clean text: the grounding tags are removed, as upstream does. The i-th figure (see
    :func:`figure_boxes`: each box of each ``image`` block) becomes ``![](link)`` when
    ``figure_links`` gives a link for it, and is dropped otherwise. A block whose label is
    not a layout class (:data:`LAYOUT_LABELS`) and that has no content of its own (the
    ``ocr`` and ``locate`` style, where the label is the recognised text) contributes its
    label as a line of text. ``\coloneqq``/``\eqqcolon`` become ``:=``/``=:``, runs of
    blank lines collapse to one, BOS/EOS/pad and ``<|grounding|>`` are removed; HTML tables
    and LaTeX are kept as they are.

    Args:
        raw: The model output, decoded with special tokens kept.
        image_size: ``(width, height)`` of the original image; when given, every block gets
            ``pixel_boxes``.
        finish_reason: The engine's finish reason; ``"length"`` marks the output truncated.
        figure_links: Links for figures: a sequence (the i-th figure gets item i; figures
            beyond its end are dropped) or a function of the figure number.

    Returns:
        The clean text, the blocks and the ``repetition``/``truncated`` flags.

    Raises:
        ConfigurationError: ``image_size`` is not two positive integers.
    """
    if image_size is not None:
        width, height = image_size
        if width <= 0 or height <= 0:
            raise ConfigurationError(f"image_size must be positive, got {image_size!r}")
    preamble, raw_blocks = _scan(strip_special(raw))

    blocks = [
        LayoutBlock(
            label=rb.label,
            boxes=rb.boxes,
            pixel_boxes=[b.to_pixels(*image_size) for b in rb.boxes] if image_size else [],
            text=_clean(rb.body),
            complete=rb.complete,
        )
        for rb in raw_blocks
    ]

    links: dict[int, list[str]] = {}
    if figure_links is not None:
        for number, (index, _box) in enumerate(figure_boxes(blocks)):
            link = _link(figure_links, number)
            if link is not None:
                links.setdefault(index, []).append(link)

    parts = [preamble]
    for index, (rb, block) in enumerate(zip(raw_blocks, blocks, strict=True)):
        parts.extend(f"![]({link})\n" for link in links.get(index, ()))
        if (
            rb.label_closed
            and block.label != _IMAGE_LABEL
            and not block.text
            and _is_text_label(block.label)
        ):
            parts.append(block.label if "\n" in rb.body else block.label + "\n")
        parts.append(rb.body)
    text = _clean("".join(parts))

    truncated = finish_reason == "length" or any(not b.complete for b in blocks)
    return ParsedOutput(
        text=text,
        blocks=blocks,
        repetition=detect_repetition(text, blocks),
        truncated=truncated,
    )


# ---------------------------------------------------------------------------------------------
# Repetition.


def _token_loop(text: str) -> bool:
    """A periodic stretch of tokens with enough copies and content (see the constants).

    Tokens are HTML tags, runs of up to 12 letters/digits (so a glued ``OCROCROCR...`` or a
    CJK run still has a period) and single other characters. For each position the previous
    occurrence of the k-gram ending there proposes a period p; the stretch is then extended
    while ``token[j] == token[j - p]``. One pass, linear in the number of tokens.
    """
    tokens = _TOKEN_RE.findall(text)
    if len(tokens) < _KGRAM + 1:
        return False
    content = [0, *accumulate(len(t) if t[0].isalnum() else 0 for t in tokens)]
    chars = [0, *accumulate(len(t) for t in tokens)]

    def is_loop(period: int, start: int, end: int) -> bool:
        repeats = (end - start) // period
        if repeats < LOOP_LONG_MIN_REPEATS:
            return False
        repeated = content[end] - content[start + period]  # beyond the first copy
        if repeats >= LOOP_MIN_REPEATS and repeated >= LOOP_MIN_CONTENT:
            return True
        if repeated >= LOOP_LONG_MIN_CONTENT:
            return True
        return repeats >= LOOP_ANY_MIN_REPEATS and chars[end] - chars[start] >= LOOP_ANY_MIN_CHARS

    last: dict[tuple[str, ...], int] = {}
    period = start = 0
    grams = zip(*(tokens[i:] for i in range(_KGRAM)), strict=False)
    for j, gram in enumerate(grams, _KGRAM - 1):
        if period and tokens[j] == tokens[j - period]:
            last[gram] = j
            continue
        if period and is_loop(period, start, j):
            return True
        previous = last.get(gram)
        last[gram] = j
        if previous is None:
            period = 0
        else:
            period = j - previous
            start = max(0, j - _KGRAM + 1 - period)
    return bool(period) and is_loop(period, start, len(tokens))


def _line_loop(text: str) -> bool:
    """One substantial line making up a large share of the lines, wherever they are."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) < LINE_REPEAT_MIN_COUNT:
        return False
    for line, count in Counter(lines).most_common():
        if count < LINE_REPEAT_MIN_COUNT:
            break
        weight = sum(len(w) for w in _WORD_RE.findall(line))
        if weight >= LINE_REPEAT_MIN_CONTENT and count >= LINE_REPEAT_MIN_FRACTION * len(lines):
            return True
    return False


def _max_periodic_repeats(keys: Sequence[object], max_period: int) -> int:
    """Most consecutive copies of a cycle of at most ``max_period`` keys."""
    best = 1
    for period in range(1, min(max_period, len(keys) // 2) + 1):
        run = 0
        for j in range(period, len(keys)):
            if keys[j] == keys[j - period]:
                run += 1
                best = max(best, run // period + 1)
            else:
                run = 0
    return best


def _block_loop(blocks: Sequence[LayoutBlock]) -> bool:
    """The same block over and over: same content with moving boxes, or identical."""
    if len(blocks) < IDENTICAL_BLOCK_MIN_REPEATS:
        return False
    content_keys: list[object] = []
    exact_keys: list[object] = []
    for block in blocks:
        body = " ".join(block.text.split())
        has_content = bool(body) or _is_text_label(block.label)
        # A fresh object() never equals anything: blocks without content (figures, empty
        # tables) only count as repeats when their boxes are identical too.
        content_keys.append((block.label, body) if has_content else object())
        exact_keys.append((block.label, body, tuple(block.boxes)) if block.boxes else object())
    if _max_periodic_repeats(exact_keys, BLOCK_MAX_PERIOD) >= IDENTICAL_BLOCK_MIN_REPEATS:
        return True
    repeats = _max_periodic_repeats(content_keys, BLOCK_MAX_PERIOD)
    return repeats >= BLOCK_LOOP_ABS_REPEATS or (
        repeats >= BLOCK_LOOP_MIN_REPEATS and repeats >= BLOCK_LOOP_MIN_FRACTION * len(blocks)
    )


def detect_repetition(text: str, blocks: Sequence[LayoutBlock] = ()) -> bool:
    """Whether an output is a degenerate loop, judged from the output itself.

    Rules (thresholds are the module's constants):

    * **Text loop**: a stretch of the text that is one unit repeated: at least
      :data:`LOOP_MIN_REPEATS` consecutive copies repeating at least
      :data:`LOOP_MIN_CONTENT` letters/digits beyond the first copy (``1.1.1.1...``,
      ``OCROCROCR...``, one sentence 20 times, one line or group of lines over and over);
      or 3+ copies of a long unit repeating :data:`LOOP_LONG_MIN_CONTENT` letters/digits;
      or a content-free unit (punctuation, markup) repeated :data:`LOOP_ANY_MIN_REPEATS`
      times over :data:`LOOP_ANY_MIN_CHARS` characters. Only letters and digits count as
      content, so HTML tables full of ``<td></td>``, dot leaders and rules do not.
    * **Line loop**: one line with :data:`LINE_REPEAT_MIN_CONTENT`+ letters/digits occurs
      :data:`LINE_REPEAT_MIN_COUNT`+ times and makes up :data:`LINE_REPEAT_MIN_FRACTION` of
      the non-blank lines, even if not consecutively.
    * **Block loop** (needs ``blocks``): a cycle of at most :data:`BLOCK_MAX_PERIOD` blocks
      with the same label and text repeated :data:`BLOCK_LOOP_ABS_REPEATS` times, or
      :data:`BLOCK_LOOP_MIN_REPEATS` times covering :data:`BLOCK_LOOP_MIN_FRACTION` of the
      blocks, whatever their boxes do; or :data:`IDENTICAL_BLOCK_MIN_REPEATS` consecutive
      copies of a block with identical boxes too.

    The evidence needed is absolute, so short outputs need proportionally stronger
    evidence, and a header or a short line repeated a few times is never a loop. A
    missing EOS is *not* evidence: pass ``finish_reason`` to :func:`parse_output` for that.

    Args:
        text: The output's text (clean or raw).
        blocks: The output's blocks, if any.

    Returns:
        True if the output looks like a loop.
    """
    return _block_loop(blocks) or _token_loop(text) or _line_loop(text)
