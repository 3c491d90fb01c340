import subprocess
import sys

import langchain_deepseek_ocr

EXPECTED = [
    "DEFAULT_MODEL",
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
    "PAGES_DELIMITER",
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


def test_building_objects_does_not_load_the_model():
    from langchain_deepseek_ocr import DeepSeekOCR, DeepSeekOCRToolkit, TransformersEngine

    engine = TransformersEngine("/no/such/model")  # would fail if it were loaded
    ocr = DeepSeekOCR(engine=engine)
    tools = DeepSeekOCRToolkit(engine=ocr).get_tools()
    assert len(tools) == 3
    assert not engine.loaded


def test_importing_the_package_does_not_import_torch_or_community():
    code = (
        "import sys, langchain_deepseek_ocr; "
        "print('torch' in sys.modules, 'langchain_community' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
