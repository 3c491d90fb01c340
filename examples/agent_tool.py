"""Ask an agent about an image: the DeepSeek-OCR toolkit inside a LangChain agent.

    python examples/agent_tool.py scan.png --chat-model openai:gpt-4.1
    python examples/agent_tool.py scan.png --model /models/DeepSeek-OCR --chat-model ollama:qwen3
    python examples/agent_tool.py scan.png --attach --chat-model anthropic:claude-sonnet-4-5
    python examples/agent_tool.py scan.png --model TINY_CHECKPOINT --scripted   # offline

The agent gets the three DeepSeek-OCR tools (read as markdown, locate, describe) on one local
engine; only the image's folder is readable by them. By default the question names the file;
with ``--attach`` the image is attached to the message instead and the tool reads it from
the conversation (the model never copies base64 into a tool call).

``--chat-model`` is any ``init_chat_model`` id (the provider's package must be installed).
``--scripted`` uses a small scripted chat model instead, so the script runs offline: it calls
``deepseek_ocr`` on the image, then answers with what the tool returned.

The script prints the question, each tool call, what the tool returned (with the OCRResult
numbers the model never sees: vision tokens, output tokens, blocks) and the final answer.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from langchain_deepseek_ocr import DEFAULT_MODEL, OCRResult
from langchain_deepseek_ocr._tools import DeepSeekOCRToolkit


class ScriptedChatModel(BaseChatModel):
    """Stands in for an LLM offline: one call to a tool, then an answer from its result."""

    tool_name: str = "deepseek_ocr"
    tool_args: dict[str, Any] = Field(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            call = {"name": self.tool_name, "args": self.tool_args, "id": "call_1"}
            reply = AIMessage(content="", tool_calls=[{**call, "type": "tool_call"}])
        elif results[-1].status == "error":
            reply = AIMessage(content=f"I could not read the image: {results[-1].content}")
        else:
            reply = AIMessage(content=f"Here is what the image says:\n\n{results[-1].content}")
        return ChatResult(generations=[ChatGeneration(message=reply)])


def question_message(image: Path, question: str, attach: bool) -> HumanMessage:
    if not attach:
        return HumanMessage(f"{question}\n\nThe image is the file {image.name}.")
    mime = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
    data = base64.b64encode(image.read_bytes()).decode()
    return HumanMessage(
        content=[
            {"type": "text", "text": question},
            {"type": "image", "base64": data, "mime_type": mime},
        ]
    )


def describe_result(result: OCRResult) -> str:
    flags = [name for name in ("repetition", "truncated") if getattr(result, name)]
    return (
        f"vision tokens: {result.vision_tokens}, output tokens: {result.output_tokens}, "
        f"blocks: {len(result.blocks)}, resolution: {result.resolution}, "
        f"image: {result.image_size[0]}x{result.image_size[1]} px"
        + (f", flags: {', '.join(flags)}" if flags else "")
    )


def print_run(messages: list[BaseMessage]) -> None:
    for message in messages:
        if isinstance(message, HumanMessage):
            text = message.text if isinstance(message.content, list) else message.content
            print(f"== question\n{text}")
        elif isinstance(message, AIMessage) and message.tool_calls:
            for tool_call in message.tool_calls:
                print(f"== tool call: {tool_call['name']} {json.dumps(tool_call['args'])}")
        elif isinstance(message, ToolMessage):
            print(f"== tool result ({message.status})")
            if isinstance(message.artifact, OCRResult):
                print(describe_result(message.artifact))
            print(message.content)
        elif isinstance(message, AIMessage):
            print(f"== answer\n{message.text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, help="an image or PDF file")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="DeepSeek-OCR hub id or folder")
    parser.add_argument("--chat-model", help="an init_chat_model id, e.g. openai:gpt-4.1")
    parser.add_argument("--scripted", action="store_true", help="use a scripted chat model")
    parser.add_argument("--question", default="What does this image say? Summarise it briefly.")
    parser.add_argument("--attach", action="store_true", help="attach the image to the message")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--resolution", choices=["tiny", "small", "base", "large", "gundam"])
    parser.add_argument("--max-new-tokens", type=int, help="token limit per page")
    args = parser.parse_args(argv)

    image = args.image.resolve()
    if not image.is_file():
        parser.error(f"{args.image} is not a file")
    if args.scripted == bool(args.chat_model):
        parser.error("pass either --chat-model MODEL_ID or --scripted")

    from langchain.agents import create_agent

    options = {"device": args.device, "resolution": args.resolution}
    options["max_new_tokens"] = args.max_new_tokens
    toolkit = DeepSeekOCRToolkit(
        model=args.model,
        allowed_roots=[image.parent],  # the tools may read this folder and nothing else
        **{k: v for k, v in options.items() if v is not None},
    )
    if args.scripted:
        chat_model: Any = ScriptedChatModel(tool_args={} if args.attach else {"image": image.name})
    else:
        from langchain.chat_models import init_chat_model

        chat_model = init_chat_model(args.chat_model)
    agent = create_agent(
        chat_model,
        tools=toolkit.get_tools(),
        system_prompt=(
            "You answer questions about images and scanned documents. Use the DeepSeek-OCR "
            "tools to read them; pass file names as given, or leave `image` out when the "
            "user attached the image."
        ),
    )
    state = agent.invoke({"messages": [question_message(image, args.question, args.attach)]})
    print_run(state["messages"])
    failed = any(isinstance(m, ToolMessage) and m.status == "error" for m in state["messages"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
