"""langchain-tests' standard suites for every tool, offline, on the tiny real v1 checkpoint.

``ToolsIntegrationTests`` invoke each tool (with and without a ToolCall, sync and async) on
a real model: the tiny random-weight checkpoint built in the published v1 layout, run by the
local TransformersEngine. The example image sits in a temporary folder that is the tools'
only allowed root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from conftest import noise_image
from langchain_deepseek_ocr import DeepSeekOCR, OCRResult, RecoveryPolicy
from langchain_deepseek_ocr._tools import (
    DeepSeekOCRDescribeTool,
    DeepSeekOCRLocateTool,
    DeepSeekOCRTool,
)


class _OnTinyModel:
    """The tools' construction: the tiny v1 engine, one allowed root holding page.png."""

    root: Path
    ocr: DeepSeekOCR

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _tiny_model_and_root(cls, v1_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
        root = tmp_path_factory.mktemp("tool-root")
        noise_image(320, 240, seed=4).save(root / "page.png")
        cls.root = root
        # The suites check the tool interface; one model run per call keeps them quick
        # (the tiny model's 8-token outputs are always "truncated", which would retry).
        cls.ocr = DeepSeekOCR(v1_engine, resolution="tiny", recovery=RecoveryPolicy(enabled=False))

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"engine": self.ocr, "allowed_roots": [self.root]}


class TestDeepSeekOCRToolUnit(_OnTinyModel, ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[DeepSeekOCRTool]:
        return DeepSeekOCRTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": "page.png"}


class TestDeepSeekOCRToolIntegration(_OnTinyModel, ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[DeepSeekOCRTool]:
        return DeepSeekOCRTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": "page.png", "task": "free"}


class TestDeepSeekOCRLocateToolUnit(_OnTinyModel, ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[DeepSeekOCRLocateTool]:
        return DeepSeekOCRLocateTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": "page.png", "target": "the title"}


class TestDeepSeekOCRLocateToolIntegration(_OnTinyModel, ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[DeepSeekOCRLocateTool]:
        return DeepSeekOCRLocateTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": "page.png", "target": "the title"}


class TestDeepSeekOCRDescribeToolUnit(_OnTinyModel, ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[DeepSeekOCRDescribeTool]:
        return DeepSeekOCRDescribeTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": "page.png", "task": "figure"}


class TestDeepSeekOCRDescribeToolIntegration(_OnTinyModel, ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[DeepSeekOCRDescribeTool]:
        return DeepSeekOCRDescribeTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": "page.png"}


@pytest.mark.parametrize(
    ("tool_class", "args", "task"),
    [
        (DeepSeekOCRTool, {"image": "page.png"}, "markdown"),
        (DeepSeekOCRLocateTool, {"image": "page.png", "target": "the title"}, "locate"),
        (DeepSeekOCRDescribeTool, {"image": "page.png", "task": "figure"}, "figure"),
    ],
)
def test_the_standard_invocations_ran_the_model(
    v1_engine: Any, tmp_path: Path, tool_class: type, args: dict[str, Any], task: str
) -> None:
    """What the standard suites cannot see: each call really ran the tiny model."""
    noise_image(320, 240, seed=4).save(tmp_path / "page.png")
    tool = tool_class(DeepSeekOCR(v1_engine, resolution="tiny"), allowed_roots=[tmp_path])
    message = tool.invoke({"type": "tool_call", "id": "1", "name": tool.name, "args": args})
    assert message.status == "success"
    result = message.artifact
    assert isinstance(result, OCRResult)
    assert result.task == task
    assert result.model == str(v1_engine.model_name)
    assert result.vision_tokens == 73  # v1 tiny: a 512 view, 64 tokens + newlines + separator
    assert result.output_tokens >= 1
    assert result.source == str(tmp_path / "page.png")
    assert isinstance(message.content, str)
    assert message.content
