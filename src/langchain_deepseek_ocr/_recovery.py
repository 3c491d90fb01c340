"""Recovery from repetition loops and truncation: retry a bad page differently, keep the best.

DeepSeek reports that 3-6% of production pages loop. The cure that works in practice is to
run the page again at another resolution (a free-OCR run that looped at a large size
worked at "small") and/or with a tighter no-repeat n-gram guard. The policy here runs
those retries, keeps the best result, and records every attempt on the result -- a page
that still fails comes back flagged, never dropped and never replaced by partial text
without a flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from langchain_deepseek_ocr._engine import OCRRequest
from langchain_deepseek_ocr._ngram import NGramGuard
from langchain_deepseek_ocr._result import Attempt, OCRResult
from langchain_deepseek_ocr._tasks import ModelFamily, Resolution

__all__ = ["RecoveryPolicy"]

_FALLBACK = {
    ModelFamily.V1: {
        Resolution.GUNDAM: Resolution.BASE,
        Resolution.LARGE: Resolution.BASE,
        Resolution.BASE: Resolution.SMALL,
        Resolution.SMALL: Resolution.TINY,
    },
    ModelFamily.V2: {
        Resolution.GUNDAM: Resolution.BASE,
        Resolution.BASE: Resolution.SMALL,
    },
}


@dataclass(frozen=True)
class RecoveryPolicy:
    """How pages that loop or are cut off are retried.

    Attributes:
        enabled: Retry at all (on by default).
        max_retries: Extra runs per bad page (1: "once more").
        change_resolution: Step down the resolution on each retry (v1 gundam -> base ->
            small; v2 gundam -> base -> small), when the engine can run another one.
        tighten_guard: Tighten the no-repeat n-gram guard on each retry
            (:meth:`NGramGuard.tightened`), when the engine applies guards.
        retry_truncated: Also retry pages cut off at the token limit.
        fallback: Per family, the resolution each mode steps down to.
    """

    enabled: bool = True
    max_retries: int = 1
    change_resolution: bool = True
    tighten_guard: bool = True
    retry_truncated: bool = True
    fallback: dict[ModelFamily, dict[Resolution, Resolution]] = field(
        default_factory=lambda: {k: dict(v) for k, v in _FALLBACK.items()}
    )

    def needs_retry(self, result: Any) -> bool:
        """Whether a result (or error) calls for another run."""
        if not self.enabled or not isinstance(result, OCRResult):
            return False
        return result.repetition or (self.retry_truncated and result.truncated)

    def next_request(self, request: OCRRequest, engine: Any) -> OCRRequest | None:
        """The request for the next attempt, or None when nothing different can be tried."""
        changes: dict[str, Any] = {}
        if self.change_resolution:
            current = request.resolution or engine.default_resolution
            step = self.fallback.get(engine.family, {}).get(current)
            if step is not None and step in engine.resolutions():
                changes["resolution"] = step
        if self.tighten_guard and getattr(engine, "supports_ngram_guard", True):
            guard = request.ngram_guard
            if guard is None:
                guard = getattr(engine, "ngram_guard", None) or NGramGuard()
            if guard is not False:
                changes["ngram_guard"] = guard.tightened()
        if not changes:
            return None
        return replace(request, **changes)


def attempt_of(request: OCRRequest, result: Any, engine: Any) -> Attempt:
    """Describe one run (its settings and outcome) for ``OCRResult.attempts``."""
    guard = request.ngram_guard
    if guard is None:
        guard = getattr(engine, "ngram_guard", None)
    if guard is False or not getattr(engine, "supports_ngram_guard", True):
        guard = None
    resolution = (request.resolution or engine.default_resolution).value
    if isinstance(result, OCRResult):
        return Attempt(
            resolution=result.resolution or resolution,
            ngram_size=guard.ngram_size if guard else None,
            window_size=guard.window_size if guard else None,
            finish_reason=result.finish_reason,
            repetition=result.repetition,
            truncated=result.truncated,
            output_tokens=result.output_tokens,
        )
    return Attempt(
        resolution=resolution,
        ngram_size=guard.ngram_size if guard else None,
        window_size=guard.window_size if guard else None,
        finish_reason="error",
        error=str(result),
    )


def _score(result: Any) -> tuple[int, int]:
    if not isinstance(result, OCRResult):
        return (-1, -1)
    return (int(not result.repetition), int(not result.truncated))


def merge_attempt(kept: OCRResult, new: Any, attempt: Attempt) -> OCRResult:
    """Keep the better of the result so far and a new attempt, recording the attempt."""
    attempts = [*kept.attempts, attempt]
    if _score(new) > _score(kept):
        return new.model_copy(update={"attempts": attempts, "kept_attempt": len(attempts) - 1})
    return kept.model_copy(update={"attempts": attempts})
