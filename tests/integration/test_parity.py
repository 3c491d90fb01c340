"""Fidelity: this package's engine and vLLM agree token for token on the same checkpoints.

vLLM's ``DeepseekOCRForCausalLM`` (v1) and ``DeepseekOCR2ForCausalLM`` (v2) are written from
DeepSeek's own code and load the real published checkpoints. Both sides here load the very
same folder -- random weights in the published layout (:func:`build_vllm_checkpoint` with
``weights=True``: full-size vision towers, which vLLM hard-codes, and a tiny language model)
-- and decode the same pages and prompts greedily in float32, with the same n-gram guard.

For every case the test asserts:

* identical prompt ids (BOS, the ``<image>`` placeholders, the prompt text), hence equal
  image-token counts: the tiling, the token layout and the prompt framing agree;
* identical generated token ids for :data:`MAX_TOKENS` steps, except at a genuine near-tie
  (top-2 log-prob gap below 1e-3 on *both* sides), where the top log-probs are compared
  instead and the comparison continues from vLLM's choice (teacher-forced);
* every raw log-prob vLLM reports (its top 20 per step) within :data:`LOGPROB_TOL` of ours;
* on the tiled page, that the comparison can see a wrong tile layout: the same features
  with the tiles reversed move the log-probs far more than the two implementations differ.

vLLM serves v1 in gundam mode only (1024 global view + 640 tiles); the other v1 modes are
covered by the token-count formulas and the preprocessing comparison
(``test_parity_preprocess.py``). The vLLM server runs alone (the shared pool's server is
stopped first, this one is stopped before the engine runs), one family at a time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from langchain_deepseek_ocr import NGramGuard, TransformersEngine
from langchain_deepseek_ocr._tasks import OCRTask, build_prompt
from langchain_deepseek_ocr.testing._vllm import (
    LocalRun,
    VLLMRun,
    VLLMServer,
    VLLMServerError,
    build_vllm_checkpoint,
    compare_greedy,
    image_features,
    local_greedy,
    score_continuation,
    vllm_greedy,
    with_features,
)

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(3600)]

MAX_TOKENS = 64
LOGPROB_TOL = 1e-4
"""Raw log-probs of the two float32 implementations differ by ~3e-6 here (vLLM reports its
top 20 per step); 1e-4 keeps a wide margin below the 1e-3 near-tie threshold and below what
a wrong tile layout does (1e-2, :func:`test_the_comparison_sees_a_wrong_tile_layout`)."""
IMAGE_ID, EOS_ID = 128815, 1
GUARD = NGramGuard()  # DeepSeek's 30-gram / 90-token window / <td> </td> whitelist
WHITELIST_IDS = (128821, 128822)


@dataclass(frozen=True)
class Case:
    name: str
    size: tuple[int, int]
    task: OCRTask
    seed: int

    @property
    def prompt(self) -> str:
        return build_prompt(self.task, ref="the total" if self.task is OCRTask.LOCATE else None)

    def image(self) -> Image.Image:
        rng = np.random.default_rng(self.seed)
        width, height = self.size
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


# Tiled pages cost a minute or more each on a 2-core machine (7 full-size encoder passes
# for the A4 page), so each shape runs once and the three prompts are spread over them.
CASES = (
    Case("small-free", (500, 380), OCRTask.FREE, 11),  # untiled: global view only
    Case("a4-markdown", (1191, 1684), OCRTask.MARKDOWN, 12),  # 2x3 tiles
    Case("wide-locate", (1600, 600), OCRTask.LOCATE, 13),  # 3x1 tiles
    Case("tall-markdown", (600, 1600), OCRTask.MARKDOWN, 14),  # 1x3 tiles
)
TILED_CASE = "a4-markdown"
EXPECTED_IMAGE_TOKENS = {
    "v1": {"small-free": 273, "a4-markdown": 903, "wide-locate": 583, "tall-markdown": 603},
    "v2": {"small-free": 257, "a4-markdown": 1121, "wide-locate": 689, "tall-markdown": 689},
}


@dataclass
class FamilyRun:
    family: str
    folder: Path
    engine: TransformersEngine
    vllm: dict[str, VLLMRun]
    timings: dict[str, float] = field(default_factory=dict)
    local: dict[str, LocalRun] = field(default_factory=dict)

    def local_run(self, case: Case) -> LocalRun:
        """The engine's run of a case (made once, shared by the tests)."""
        if case.name not in self.local:
            self.local[case.name] = local_greedy(
                self.engine, case.image(), case.prompt, max_tokens=MAX_TOKENS
            )
        return self.local[case.name]


def _report(line: dict[str, Any]) -> None:
    """Print one result line; also append it to $DSOCR_PARITY_REPORT (JSON lines) if set."""
    print("[parity] " + json.dumps(line), file=sys.stderr)
    target = os.environ.get("DSOCR_PARITY_REPORT")
    if target:
        with Path(target).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


@pytest.fixture(scope="session")
def parity_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders built on first use: random full-size-vision weights, published layout."""
    return {}


def _checkpoint(cache: dict[str, Path], family: str, root: Path) -> Path:
    if family not in cache:
        began = time.monotonic()
        cache[family] = build_vllm_checkpoint(root / f"parity-{family}", family, weights=True)
        _report({"family": family, "event": "checkpoint", "seconds": time.monotonic() - began})
    return cache[family]


@pytest.fixture(scope="module", params=["v1", "v2"])
def family_run(
    request: pytest.FixtureRequest,
    vllm_servers: Any,
    vllm_venv: Path,
    parity_checkpoints: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """One family: vLLM answers every case (then stops), then the engine is loaded."""
    family: str = request.param
    root = tmp_path_factory.getbasetemp()
    folder = _checkpoint(parity_checkpoints, family, root)
    vllm_servers.close()  # one vLLM server at a time on this machine
    server = VLLMServer(
        folder,
        venv=vllm_venv,
        load_format=None,  # the folder's weights, not dummy ones
        dtype="float32",
        log_path=root / f"vllm-parity-{family}.log",
        startup_timeout=900,
    )
    try:
        server.start()
    except VLLMServerError as exc:
        pytest.fail(f"the vLLM {family} parity server did not start: {exc}", pytrace=False)
    timings = {"server_start": server.startup_seconds or 0.0}
    runs: dict[str, VLLMRun] = {}
    try:
        for case in CASES:
            runs[case.name] = vllm_greedy(
                server.base_url,
                case.image(),
                case.prompt,
                max_tokens=MAX_TOKENS,
                guard=GUARD,
                whitelist_ids=WHITELIST_IDS,
                model=server.served_model_name,
            )
            timings[f"vllm:{case.name}"] = runs[case.name].seconds
    finally:
        server.stop()
    engine = TransformersEngine(
        str(folder),
        device="cpu",
        dtype="float32",
        max_new_tokens=MAX_TOKENS,
        ngram_guard=GUARD,
    )
    began = time.monotonic()
    engine.load()
    timings["engine_load"] = time.monotonic() - began
    _report({"family": family, "event": "vllm", "timings": timings})
    yield FamilyRun(family, folder, engine, runs, timings)
    engine.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_greedy_tokens_agree_with_vllm(family_run: FamilyRun, case: Case) -> None:
    vllm = family_run.vllm[case.name]
    local = family_run.local_run(case)
    report = compare_greedy(
        vllm,
        local,
        image_token_id=IMAGE_ID,
        eos_id=EOS_ID,
        guard=GUARD,
        whitelist_ids=WHITELIST_IDS,
        rescore=lambda tokens: score_continuation(family_run.engine, local, tokens),
    )
    _report(
        {
            "family": family_run.family,
            "case": case.name,
            "size": case.size,
            "prompt": case.prompt,
            "vllm_seconds": round(vllm.seconds, 1),
            "local_seconds": round(local.seconds, 1),
            "summary": report.summary(),
            "near_ties": [t.__dict__ for t in report.near_ties],
        }
    )
    expected = EXPECTED_IMAGE_TOKENS[family_run.family][case.name]
    assert report.image_tokens == (expected, expected)
    assert local.vision_tokens == expected
    assert report.prompt_equal, (vllm.prompt_ids, local.prompt_ids)
    assert report.steps == MAX_TOKENS, report.summary()
    assert not report.mismatches, "\n".join(report.mismatches)
    assert report.max_logprob_diff < LOGPROB_TOL, report.summary()
    if report.near_ties:
        # Tokens may differ only from a near-tie on; up to it they are the engine's own.
        assert report.first_difference == report.near_ties[0].step
        assert all(t.logprob_diff < LOGPROB_TOL for t in report.near_ties)
    else:
        assert report.identical, report.summary()
        assert local.token_ids == vllm.token_ids


def test_the_comparison_sees_a_wrong_tile_layout(family_run: FamilyRun) -> None:
    """Reversing the tile features moves the log-probs far beyond the parity tolerance."""
    case = next(c for c in CASES if c.name == TILED_CASE)
    vllm = family_run.vllm[case.name]
    local = family_run.local_run(case)
    engine = family_run.engine
    features = image_features(engine, local)[0]
    q = 16  # the 1024 global view: 16x16 queries (+ a newline per row in v1)
    global_rows = q * (q + 1) if family_run.family == "v1" else q * q
    tiles = features.shape[0] - global_rows - 1
    assert tiles == EXPECTED_IMAGE_TOKENS[family_run.family][case.name] - global_rows - 1
    swapped = torch.cat([features[:tiles].flip(0), features[tiles:]])
    right = score_continuation(engine, with_features(local, [features]), vllm.token_ids)
    moved = score_continuation(engine, with_features(local, [swapped]), vllm.token_ids)
    own_diff = max(
        abs(float(right[j, t]) - value)
        for j, row in enumerate(vllm.logprobs)
        for t, value in row.items()
    )
    layout_diff = float((moved - right).abs().max())
    _report(
        {
            "family": family_run.family,
            "case": case.name,
            "event": "sensitivity",
            "implementations_differ_by": own_diff,
            "reversed_tiles_move_by": layout_diff,
        }
    )
    assert own_diff < LOGPROB_TOL
    assert layout_diff > 10 * LOGPROB_TOL
    assert layout_diff > 100 * max(own_diff, 1e-6)
