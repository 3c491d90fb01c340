"""The engine seam: one Protocol every backend implements, and the data that crosses it.

The facade, the tools, the loaders and the CLI never know what runs the model. They hand
an engine a batch of :class:`OCRRequest` (one page image each, already normalised) and get
back, item by item, an :class:`EngineOutput` or the typed error for that item -- a failing
page never costs the other pages of the batch.

An engine is batch-aware (it may group requests as it likes), has a synchronous and an
asynchronous entry point, and can stream tokens.

Optional attributes the layers above read when present: ``batch_size`` (how many pages to
hand over per call; documents are chunked by it), ``ngram_guard`` (the default guard) and
``supports_ngram_guard`` (False for servers that cannot apply one, e.g. Ollama; then the
recovery policy does not pretend to tighten it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from PIL import Image

from langchain_deepseek_ocr._errors import DeepSeekOCRError
from langchain_deepseek_ocr._ngram import NGramGuard
from langchain_deepseek_ocr._tasks import ModelFamily, OCRTask, Resolution

__all__ = [
    "EngineOutput",
    "EngineResult",
    "OCREngine",
    "OCRRequest",
    "TokenCallback",
]

TokenCallback = Callable[[int, str], None]
"""Called as ``on_token(index, text)`` with each new piece of text of request ``index``."""


@dataclass(frozen=True)
class OCRRequest:
    r"""One page for the engine.

    Attributes:
        image: The page, an RGB PIL image (EXIF-transposed).
        prompt: The prompt text that follows ``<image>\\n`` (see ``build_prompt``).
        task: The task the prompt came from (for the result).
        resolution: The resolution mode, or ``None`` for the engine's default.
        max_new_tokens: Token limit for this page, or ``None`` for the engine's default.
        ngram_guard: ``None`` for the engine's default guard, ``False`` to switch it off,
            or a guard to use for this page (a retry may tighten it).
        source: Where the page came from, for errors and results.
        page: The 0-based page within ``source``, if any.
    """

    image: Image.Image
    prompt: str
    task: OCRTask = OCRTask.MARKDOWN
    resolution: Resolution | None = None
    max_new_tokens: int | None = None
    ngram_guard: NGramGuard | Literal[False] | None = None
    source: str | None = None
    page: int | None = None


@dataclass
class EngineOutput:
    """What the engine produced for one request.

    Attributes:
        raw: The generated text with special tags kept and BOS/EOS/pad removed.
        finish_reason: ``stop`` (end of sequence) or ``length`` (token limit).
        vision_tokens: Image placeholder tokens in the prompt.
        prompt_tokens: All prompt tokens (BOS, image placeholders, text).
        output_tokens: Generated tokens (the end-of-sequence token included).
        seconds: Wall time spent on this request (its batch's time, shared).
        resolution: The resolution mode used.
        model: The model that ran.
        token_ids: The generated token ids, when the engine exposes them.
    """

    raw: str
    finish_reason: Literal["stop", "length"]
    vision_tokens: int
    prompt_tokens: int
    output_tokens: int
    seconds: float
    resolution: str
    model: str
    token_ids: list[int] = field(default_factory=list)


EngineResult = EngineOutput | DeepSeekOCRError
"""Per item: the output, or the typed error that item ended in."""


@runtime_checkable
class OCREngine(Protocol):
    """What every engine implements (local transformers, OpenAI-compatible servers...)."""

    @property
    def model_name(self) -> str:
        """The model it runs (hub id or folder)."""
        ...

    @property
    def family(self) -> ModelFamily:
        """The model family (decides resolutions and token layout)."""
        ...

    @property
    def default_resolution(self) -> Resolution:
        """The resolution used when a request names none."""
        ...

    def resolutions(self) -> tuple[Resolution, ...]:
        """The resolution modes this engine can run."""
        ...

    def generate(
        self, requests: Sequence[OCRRequest], *, on_token: TokenCallback | None = None
    ) -> list[EngineResult]:
        """Run a batch; one result per request, in order, errors returned not raised."""
        ...

    async def agenerate(
        self, requests: Sequence[OCRRequest], *, on_token: TokenCallback | None = None
    ) -> list[EngineResult]:
        """The asynchronous :meth:`generate`."""
        ...

    def stream(self, request: OCRRequest) -> Iterator[str]:
        """Yield the text of one request as it is generated."""
        ...

    def astream(self, request: OCRRequest) -> AsyncIterator[str]:
        """The asynchronous :meth:`stream`."""
        ...
