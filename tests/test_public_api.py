import subprocess
import sys

import langchain_deepseek_ocr

EXPECTED = [
    "DEFAULT_MODEL",
    "Attempt",
    "Box",
    "ConfigurationError",
    "CorruptInputError",
    "DeepSeekOCR",
    "DeepSeekOCRError",
    "EngineConnectionError",
    "EngineError",
    "EngineOutput",
    "EngineStatusError",
    "EngineTimeoutError",
    "GenerationError",
    "InputError",
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
    "PageImage",
    "PageOutOfRangeError",
    "ParsedOutput",
    "RecoveryPolicy",
    "Resolution",
    "TransformersEngine",
    "UnsupportedInputError",
    "__version__",
    "parse_output",
]


def test_all_is_pinned():
    assert sorted(langchain_deepseek_ocr.__all__) == sorted(EXPECTED)
    for name in EXPECTED:
        assert hasattr(langchain_deepseek_ocr, name), name


def test_every_error_derives_from_the_root():
    from langchain_deepseek_ocr import DeepSeekOCRError

    errors = [getattr(langchain_deepseek_ocr, n) for n in EXPECTED if n.endswith("Error")]
    assert all(issubclass(e, DeepSeekOCRError) for e in errors)
    err = langchain_deepseek_ocr.CorruptInputError("bad bytes", source="a.pdf", page=3)
    assert str(err) == "a.pdf (page 3): bad bytes"


def test_importing_the_package_does_not_import_torch():
    code = "import sys, langchain_deepseek_ocr; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
