import pytest

from langchain_deepseek_ocr import ConfigurationError, ModelFamily, OCRTask, Resolution
from langchain_deepseek_ocr._tasks import build_prompt, resolution_spec, resolutions_for


@pytest.mark.parametrize(
    ("task", "prompt"),
    [
        ("markdown", "<|grounding|>Convert the document to markdown."),
        ("ocr", "<|grounding|>OCR this image."),
        ("free", "Free OCR."),
        ("figure", "Parse the figure."),
        ("describe", "Describe this image in detail."),
    ],
)
def test_prompt_table(task, prompt):
    assert build_prompt(task) == prompt
    assert build_prompt(OCRTask(task)) == prompt


def test_locate_needs_ref_and_formats_it():
    assert build_prompt("locate", ref=" the hat ") == "Locate <|ref|>the hat<|/ref|> in the image."
    with pytest.raises(ConfigurationError, match="ref"):
        build_prompt("locate")


def test_custom_prompt_and_override():
    assert build_prompt("custom", prompt="Extract the text in the image.") == (
        "Extract the text in the image."
    )
    assert build_prompt("markdown", prompt="<image>\nFree OCR. ") == "Free OCR."
    with pytest.raises(ConfigurationError):
        build_prompt("custom")
    with pytest.raises(ConfigurationError, match="unknown task"):
        build_prompt("summarise")


def test_grounded_tasks():
    assert {t for t in OCRTask if t.grounded} == {OCRTask.MARKDOWN, OCRTask.OCR, OCRTask.LOCATE}


def test_resolution_tables():
    assert resolutions_for(ModelFamily.V1) == tuple(Resolution)
    assert set(resolutions_for(ModelFamily.V2)) == {
        Resolution.SMALL,
        Resolution.BASE,
        Resolution.GUNDAM,
    }
    g1 = resolution_spec("v1", "gundam")
    assert (g1.base_size, g1.image_size, g1.crop, g1.max_tiles) == (1024, 640, True, 6)
    g2 = resolution_spec("v2", "gundam")
    assert (g2.base_size, g2.image_size, g2.crop) == (1024, 768, True)
    assert resolution_spec("v1", "gundam", max_tiles=9).max_tiles == 9


def test_resolution_errors():
    with pytest.raises(ConfigurationError, match="does not exist for DeepSeek-OCR v2"):
        resolution_spec("v2", "tiny")
    with pytest.raises(ConfigurationError, match="unknown resolution"):
        resolution_spec("v1", "huge")
    with pytest.raises(ConfigurationError, match="tile range"):
        resolution_spec("v1", "gundam", max_tiles=10)
    with pytest.raises(ConfigurationError, match="tile range"):
        resolution_spec("v2", "gundam", max_tiles=9)
