"""DeepSeek-OCR (v1 and v2) for LangChain.

The data path, one module each: input normalisation (``_inputs``) -> request and prompt
(``_tasks``) -> engine (``_engine`` Protocol; ``TransformersEngine`` locally) -> parse
(``_parse``, box maths in ``_boxes``) -> results (``_result``) -> the ``DeepSeekOCR``
Runnable and the ``deepseek-ocr`` CLI.
"""

from langchain_deepseek_ocr._boxes import Box
from langchain_deepseek_ocr._checkpoint import DEFAULT_MODEL
from langchain_deepseek_ocr._documents import (
    PAGES_DELIMITER,
    error_to_document,
    result_to_documents,
    results_to_document,
)
from langchain_deepseek_ocr._engine import EngineOutput, OCREngine, OCRRequest
from langchain_deepseek_ocr._errors import (
    AccessDeniedError,
    ConfigurationError,
    CorruptInputError,
    DeepSeekOCRError,
    EngineConnectionError,
    EngineError,
    EngineStatusError,
    EngineTimeoutError,
    GenerationError,
    InputError,
    InputFetchError,
    InputNotFoundError,
    InputTooLargeError,
    ModelLoadError,
    PageOutOfRangeError,
    UnsupportedInputError,
)
from langchain_deepseek_ocr._facade import DeepSeekOCR
from langchain_deepseek_ocr._inputs import InputLimits, PageImage
from langchain_deepseek_ocr._loader import DeepSeekOCRLoader
from langchain_deepseek_ocr._ngram import NGramGuard
from langchain_deepseek_ocr._openai_engine import EndpointStatus, OpenAIEngine
from langchain_deepseek_ocr._parse import ParsedOutput, parse_output
from langchain_deepseek_ocr._parsers import DeepSeekOCRParser
from langchain_deepseek_ocr._recovery import RecoveryPolicy
from langchain_deepseek_ocr._result import Attempt, LayoutBlock, OCRResult
from langchain_deepseek_ocr._sources import ImageSourcePolicy
from langchain_deepseek_ocr._tasks import ModelFamily, OCRTask, Resolution
from langchain_deepseek_ocr._tools import (
    DeepSeekOCRDescribeTool,
    DeepSeekOCRLocateTool,
    DeepSeekOCRTool,
    DeepSeekOCRToolkit,
)
from langchain_deepseek_ocr._transformers_engine import TransformersEngine

__version__ = "0.1.0"


def __getattr__(name: str):
    """Import ``DeepSeekOCRImageBlobParser`` on first use: it needs langchain-community."""
    if name == "DeepSeekOCRImageBlobParser":
        from langchain_deepseek_ocr import _parsers

        return _parsers.DeepSeekOCRImageBlobParser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL",
    "PAGES_DELIMITER",
    "AccessDeniedError",
    "Attempt",
    "Box",
    "ConfigurationError",
    "CorruptInputError",
    "DeepSeekOCR",
    "DeepSeekOCRDescribeTool",
    "DeepSeekOCRError",
    "DeepSeekOCRImageBlobParser",
    "DeepSeekOCRLoader",
    "DeepSeekOCRLocateTool",
    "DeepSeekOCRParser",
    "DeepSeekOCRTool",
    "DeepSeekOCRToolkit",
    "EndpointStatus",
    "EngineConnectionError",
    "EngineError",
    "EngineOutput",
    "EngineStatusError",
    "EngineTimeoutError",
    "GenerationError",
    "ImageSourcePolicy",
    "InputError",
    "InputFetchError",
    "InputLimits",
    "InputNotFoundError",
    "InputTooLargeError",
    "LayoutBlock",
    "ModelFamily",
    "ModelLoadError",
    "NGramGuard",
    "OCREngine",
    "OCRRequest",
    "OCRResult",
    "OCRTask",
    "OpenAIEngine",
    "PageImage",
    "PageOutOfRangeError",
    "ParsedOutput",
    "RecoveryPolicy",
    "Resolution",
    "TransformersEngine",
    "UnsupportedInputError",
    "__version__",
    "error_to_document",
    "parse_output",
    "result_to_documents",
    "results_to_document",
]
