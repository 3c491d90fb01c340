"""The parity comparison itself, without vLLM: near-ties, mismatches, the guard, EOS.

``compare_greedy`` decides whether two greedy generations agree; the real run
(``test_parity.py``) may never meet a near-tie, so every branch is checked here on
hand-made runs, and the engine-side recorder (``local_greedy``) and the teacher-forced
continuation (``score_continuation``) on a tiny model.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import noise_image
from langchain_deepseek_ocr import NGramGuard, TransformersEngine
from langchain_deepseek_ocr.testing._vllm import (
    LocalRun,
    VLLMRun,
    compare_greedy,
    image_features,
    local_greedy,
    score_continuation,
    with_features,
)

IMAGE, EOS, VOCAB = 7, 1, 12
PROMPT = [0, IMAGE, IMAGE, IMAGE, 5]


def _logprobs(rows: list[dict[int, float]]) -> torch.Tensor:
    """Log-softmax of logits that are 0 except the given ones (one row per step)."""
    logits = torch.zeros(len(rows), VOCAB)
    for j, row in enumerate(rows):
        for tid, value in row.items():
            logits[j, tid] = value
    return torch.log_softmax(logits, dim=-1)


def _vllm_from(lp: torch.Tensor, tokens: list[int], k: int = 5, **kw) -> VLLMRun:
    steps = []
    for j, tid in enumerate(tokens):
        top = torch.topk(lp[j], k)
        row = {int(t): float(v) for v, t in zip(top.values, top.indices, strict=True)}
        row[tid] = float(lp[j, tid])
        steps.append(row)
    return VLLMRun(
        prompt_ids=kw.pop("prompt_ids", PROMPT),
        token_ids=tokens,
        logprobs=steps,
        finish_reason=kw.pop("finish_reason", "length"),
        seconds=0.0,
    )


def _local(lp: torch.Tensor, tokens: list[int], **kw) -> LocalRun:
    return LocalRun(
        prompt_ids=kw.pop("prompt_ids", PROMPT),
        token_ids=tokens,
        logprobs=lp,
        vision_tokens=3,
        finish_reason=kw.pop("finish_reason", "length"),
        seconds=0.0,
    )


def _compare(vllm: VLLMRun, local: LocalRun, **kw):
    return compare_greedy(vllm, local, image_token_id=IMAGE, eos_id=EOS, **kw)


def test_identical_runs_agree():
    lp = _logprobs([{3: 2.0}, {4: 2.0}, {3: 2.0}])
    report = _compare(_vllm_from(lp, [3, 4, 3]), _local(lp, [3, 4, 3]))
    assert report.ok
    assert report.identical
    assert report.image_tokens == (3, 3)
    assert report.near_ties == []
    assert report.max_logprob_diff == 0.0
    assert report.steps == 3


def test_a_near_tie_is_compared_by_logprobs_and_continued_from_vllm():
    # step 1: tokens 4 and 6 within 5e-4; vLLM took 4, the engine 6 and then went its own way
    vllm_lp = _logprobs([{3: 2.0}, {4: 2.0005, 6: 2.0}, {8: 2.0}, {9: 2.0}])
    local_lp = _logprobs([{3: 2.0}, {4: 2.0, 6: 2.0002}, {2: 2.0}, {2: 2.0}])
    # the engine's model forced onto vLLM's tokens: its own step 1, then vLLM's choices
    teacher = torch.cat([local_lp[:2], vllm_lp[2:] + 1e-6])

    report = _compare(
        _vllm_from(vllm_lp, [3, 4, 8, 9]),
        _local(local_lp, [3, 6, 2, 2]),
        rescore=lambda tokens: teacher,
    )
    assert report.ok, report.mismatches
    assert not report.identical
    assert report.first_difference == 1
    assert [t.step for t in report.near_ties] == [1]
    tie = report.near_ties[0]
    assert (tie.vllm_token, tie.local_token) == (4, 6)
    assert tie.vllm_gap < 1e-3
    assert tie.local_gap < 1e-3
    assert tie.logprob_diff < 1e-3
    assert report.max_logprob_diff < 1e-3  # steps 2 and 3 were judged on vLLM's prefix


def test_a_clear_disagreement_is_a_mismatch():
    vllm_lp = _logprobs([{3: 2.0}, {4: 3.0}])
    local_lp = _logprobs([{3: 2.0}, {6: 3.0}])
    report = _compare(
        _vllm_from(vllm_lp, [3, 4]), _local(local_lp, [3, 6]), rescore=lambda _t: local_lp
    )
    assert not report.ok
    assert "step 1" in report.mismatches[0]
    assert report.max_logprob_diff > 1.0


def test_a_gap_below_the_threshold_on_one_side_only_is_not_a_near_tie():
    vllm_lp = _logprobs([{4: 2.1, 6: 2.0}])  # a clear 0.1 gap on vLLM's side
    local_lp = _logprobs([{4: 2.0, 6: 2.0005}])
    report = _compare(_vllm_from(vllm_lp, [4]), _local(local_lp, [6]), rescore=lambda _t: local_lp)
    assert not report.ok
    assert report.near_ties == []


def test_the_guard_is_applied_to_both_sides():
    # 2-gram guard: after 3 4 3, token 4 would repeat the 2-gram (3, 4); both sides take 5
    rows = [{3: 2.0}, {4: 2.0}, {3: 2.0}, {4: 3.0, 5: 2.0}]
    lp = _logprobs(rows)
    guard = NGramGuard(ngram_size=2, window_size=8, whitelist=())
    report = _compare(_vllm_from(lp, [3, 4, 3, 5]), _local(lp, [3, 4, 3, 5]), guard=guard)
    assert report.ok, report.mismatches
    assert report.banned_steps == 1
    # without the guard, vLLM's choice of 5 is a mismatch
    unguarded = _compare(
        _vllm_from(lp, [3, 4, 3, 5]), _local(lp, [3, 4, 3, 4]), rescore=lambda _t: lp
    )
    assert not unguarded.ok


def test_whitelisted_tokens_are_never_banned():
    rows = [{3: 2.0}, {4: 2.0}, {3: 2.0}, {4: 3.0, 5: 2.0}]
    lp = _logprobs(rows)
    guard = NGramGuard(ngram_size=2, window_size=8, whitelist=())
    report = _compare(
        _vllm_from(lp, [3, 4, 3, 4]), _local(lp, [3, 4, 3, 4]), guard=guard, whitelist_ids=[4]
    )
    assert report.ok, report.mismatches


def test_vllm_reports_eos_the_engine_does_not():
    lp = _logprobs([{3: 2.0}, {EOS: 3.0}])
    report = _compare(
        _vllm_from(lp, [3, EOS], finish_reason="stop"), _local(lp, [3], finish_reason="stop")
    )
    assert report.ok
    assert report.identical


def test_different_prompts_fail():
    lp = _logprobs([{3: 2.0}])
    report = _compare(_vllm_from(lp, [3], prompt_ids=[0, IMAGE, IMAGE, 5]), _local(lp, [3]))
    assert not report.prompt_equal
    assert report.image_tokens == (2, 3)
    assert not report.ok


def test_differing_runs_need_a_rescorer():
    lp = _logprobs([{3: 2.0}])
    with pytest.raises(ValueError, match="rescore"):
        _compare(_vllm_from(lp, [3]), _local(lp, [4]))


@pytest.mark.slow
def test_the_engine_recorder_and_the_teacher_forced_pass_agree(tiny_v1_dir):
    """Recorded decode scores equal a teacher-forced pass on the same tokens."""
    guard = NGramGuard(ngram_size=2, window_size=16, whitelist=())
    engine = TransformersEngine(
        str(tiny_v1_dir), device="cpu", dtype="float32", max_new_tokens=12, ngram_guard=guard
    )
    net = engine.load()._loaded.model
    image = noise_image(900, 700, seed=5)  # tiled in gundam mode
    run = local_greedy(engine, image, "Free OCR.", max_tokens=12)
    assert "generate" not in vars(net)  # the spy is gone
    special = engine._loaded.special
    assert run.prompt_ids[0] == special.bos
    assert run.prompt_ids.count(special.image) == run.vision_tokens
    assert run.logprobs.shape == (len(run.token_ids), net.config.text_config.vocab_size)

    teacher = score_continuation(engine, run, run.token_ids)
    torch.testing.assert_close(teacher, run.logprobs, atol=1e-4, rtol=0)
    # the same through pre-computed features (what the layout-sensitivity check perturbs)
    features = image_features(engine, run)
    assert len(features) == 1
    assert features[0].shape[0] == run.vision_tokens
    via_features = score_continuation(engine, with_features(run, features), run.token_ids)
    torch.testing.assert_close(via_features, run.logprobs, atol=1e-4, rtol=0)

    # vLLM stand-in: the engine's own top-5 -> identical, guard applied on both sides
    vllm = _vllm_from(run.logprobs, run.token_ids, prompt_ids=run.prompt_ids)
    report = compare_greedy(
        vllm, run, image_token_id=special.image, eos_id=special.eos, guard=guard
    )
    assert report.ok, report.summary()
    assert report.identical

    # a forced prefix: continue from a token the engine did not choose
    forced = [run.token_ids[0], (run.token_ids[1] + 1) % 50, *run.token_ids[2:]]
    rescored = score_continuation(engine, dataclasses.replace(run), forced)
    torch.testing.assert_close(rescored[:2], run.logprobs[:2], atol=1e-4, rtol=0)
    assert not torch.allclose(rescored[2:], run.logprobs[2:], atol=1e-4)
