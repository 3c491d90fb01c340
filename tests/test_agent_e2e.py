"""End to end: a LangChain v1 agent (``create_agent``) calls the OCR tools on the tiny real model.

The chat model is scripted (it calls a tool, then answers from the tool's result); the OCR
runs for real: the tiny random-weight v1 checkpoint in the published layout, loaded by the
local TransformersEngine. What is checked is the plumbing an application relies on: the
tool schemas the model is given, the ToolMessage in the final state with its artifact (the
OCRResult), the user's attached image reaching the tool without the model copying it, and
an error that the agent survives.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from conftest import noise_image
from langchain_deepseek_ocr import DeepSeekOCR, OCRResult
from langchain_deepseek_ocr._tools import DeepSeekOCRToolkit


class ScriptedToolCaller(BaseChatModel):
    """A chat model that calls one tool, then answers with the tool's result.

    It records the tools it was bound to (as OpenAI tool schemas) and every prompt it saw.
    """

    tool_name: str
    tool_args: dict[str, Any] = Field(default_factory=dict)
    bound: list[dict[str, Any]] = Field(default_factory=list)
    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-caller"

    def bind_tools(self, tools: Sequence[Any], **_kwargs: Any) -> ScriptedToolCaller:
        self.bound[:] = [convert_to_openai_tool(tool) for tool in tools]
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.prompts.append(list(messages))
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            call = {"name": self.tool_name, "args": self.tool_args, "id": "call_1"}
            message = AIMessage(content="", tool_calls=[{**call, "type": "tool_call"}])
        elif results[-1].status == "error":
            message = AIMessage(content=f"I could not read it: {results[-1].content}")
        else:
            message = AIMessage(content=f"The page reads:\n\n{results[-1].content}")
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.fixture
def toolkit(v1_engine: Any, tmp_path: Path) -> DeepSeekOCRToolkit:
    """The toolkit on the tiny real model (default gundam mode, default recovery)."""
    noise_image(480, 360, seed=11).save(tmp_path / "scan.png")
    (tmp_path / "secret").mkdir()
    return DeepSeekOCRToolkit(DeepSeekOCR(v1_engine), allowed_roots=[tmp_path])


def png_b64(width: int, height: int) -> str:
    buffer = io.BytesIO()
    noise_image(width, height, seed=12).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def check_artifact(result: Any, v1_engine: Any, task: str, size: tuple[int, int]) -> None:
    assert isinstance(result, OCRResult)
    assert result.task == task
    assert result.model == v1_engine.model_name  # the real engine ran, not a stand-in
    assert result.image_size == size
    assert result.vision_tokens == 273  # a page <= 640 px: the 1024 global view only (v1)
    assert result.resolution == "gundam"
    assert result.output_tokens >= 1


def test_agent_calls_the_ocr_tool_on_a_file(
    toolkit: DeepSeekOCRToolkit, v1_engine: Any, tmp_path: Path
) -> None:
    model = ScriptedToolCaller(tool_name="deepseek_ocr", tool_args={"image": "scan.png"})
    agent = create_agent(model, tools=toolkit.get_tools())
    state = agent.invoke({"messages": [HumanMessage("What does scan.png say?")]})

    names = [tool["function"]["name"] for tool in model.bound]
    assert names == ["deepseek_ocr", "deepseek_ocr_locate", "deepseek_ocr_describe"]
    for tool in model.bound:  # the injected runtime never reaches the model's schema
        assert "runtime" not in tool["function"]["parameters"]["properties"]

    messages = state["messages"]
    assert [type(m).__name__ for m in messages] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    tool_message = messages[2]
    assert tool_message.name == "deepseek_ocr"
    assert tool_message.tool_call_id == "call_1"
    assert tool_message.status == "success"
    result = tool_message.artifact
    check_artifact(result, v1_engine, "markdown", (480, 360))
    assert result.source == str(tmp_path / "scan.png")
    # the model was sent the content (markdown + flags), never the artifact
    assert tool_message.content.startswith(result.text.strip() or "(no text was found")
    if result.truncated:
        assert "[Warning: the output for scan.png was cut off" in tool_message.content
    assert model.prompts[1][-1].content == tool_message.content
    assert messages[-1].content == f"The page reads:\n\n{tool_message.content}"


def test_agent_reads_the_image_the_user_attached(
    toolkit: DeepSeekOCRToolkit, v1_engine: Any
) -> None:
    model = ScriptedToolCaller(tool_name="deepseek_ocr", tool_args={})  # no image argument
    agent = create_agent(model, tools=toolkit.get_tools())
    question = HumanMessage(
        content=[
            {"type": "text", "text": "What does this say?"},
            {"type": "image", "base64": png_b64(300, 200), "mime_type": "image/png"},
        ]
    )
    state = agent.invoke({"messages": [question]})
    tool_message = state["messages"][2]
    assert isinstance(tool_message, ToolMessage)
    assert tool_message.status == "success"
    assert state["messages"][1].tool_calls[0]["args"] == {}  # no base64 in the tool call
    check_artifact(tool_message.artifact, v1_engine, "markdown", (300, 200))
    assert tool_message.artifact.source == "<attached image>"
    assert state["messages"][-1].content.startswith("The page reads:")


async def test_agent_async_locate_on_an_attachment(
    toolkit: DeepSeekOCRToolkit, v1_engine: Any
) -> None:
    model = ScriptedToolCaller(tool_name="deepseek_ocr_locate", tool_args={"target": "the title"})
    agent = create_agent(model, tools=toolkit.get_tools())
    question = HumanMessage(
        content=[
            {"type": "text", "text": "Where is the title?"},
            {
                "type": "image_url",
                "image_url": {"url": f"data:image/png;base64,{png_b64(400, 300)}"},
            },
        ]
    )
    state = await agent.ainvoke({"messages": [question]})
    tool_message = state["messages"][2]
    assert tool_message.status == "success"
    check_artifact(tool_message.artifact, v1_engine, "locate", (400, 300))
    # "No match for ..." or "N matches for ...", depending on what the random model wrote
    assert "for 'the title' in the attached image (400×300 px)" in tool_message.content


def test_agent_survives_a_refused_path(toolkit: DeepSeekOCRToolkit, tmp_path: Path) -> None:
    model = ScriptedToolCaller(tool_name="deepseek_ocr", tool_args={"image": "../../etc/passwd"})
    agent = create_agent(model, tools=toolkit.get_tools())
    state = agent.invoke({"messages": [HumanMessage("Read /etc/passwd for me")]})
    tool_message = state["messages"][2]
    assert tool_message.status == "error"
    assert tool_message.artifact is None
    assert tool_message.content == (
        f"../../etc/passwd: this path is outside the folders files may be read from "
        f"({tmp_path.resolve()}); pass a path under one of them"
    )
    assert state["messages"][-1].content.startswith("I could not read it: ../../etc/passwd")
