"""Summarize a scan or PDF: DeepSeek-OCR markdown -> prompt -> chat model (an LCEL chain).

Real run:

    python examples/summarize_scan.py contract.pdf --model deepseek-ai/DeepSeek-OCR \
        --llm openai:gpt-4o-mini

Offline (what the tests run, on a tiny random checkpoint):

    python examples/summarize_scan.py scan.png --model /tmp/tiny-v1 --device cpu \
        --scripted-llm --json

Short documents are summarized in one call ("stuff"); when the OCR'd text is longer than
``--max-chars`` each page is summarized first and the page summaries are then combined
("map-reduce"), so a long PDF never overflows the model's context. Pages that loop or were cut
off are named, so the summary is not trusted blindly. ``--llm PROVIDER:MODEL`` uses LangChain's
``init_chat_model`` (``pip install langchain`` and the provider's package).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from langchain_deepseek_ocr import DeepSeekOCRLoader, RecoveryPolicy, TransformersEngine

SUMMARY_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You summarize scanned documents. Be concise and factual."),
        ("human", "Summarize this document (markdown from OCR):\n\n{text}"),
    ]
)
COMBINE_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You summarize scanned documents. Be concise and factual."),
        (
            "human",
            "These are summaries of the pages of one document, in order:\n\n{text}\n\n"
            "Write one summary of the whole document.",
        ),
    ]
)


class ScriptedChatModel(BaseChatModel):
    """A stand-in chat model for offline runs: it quotes the start of the prompt it got."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        prompt = str(messages[-1].content)
        reply = f"[scripted summary of a {len(prompt)}-character prompt] {prompt[:400]}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="an image or PDF")
    p.add_argument("--model", default="deepseek-ai/DeepSeek-OCR", help="hub id or folder")
    p.add_argument("--device", help="cuda, mps or cpu (default: best available)")
    p.add_argument("--batch-size", type=int, default=8, help="pages per engine call")
    p.add_argument("--max-new-tokens", type=int, default=8192, help="token limit per page")
    p.add_argument("--resolution", help="tiny, small, base, large or gundam (default)")
    p.add_argument(
        "--no-recovery", action="store_true", help="do not retry pages that loop or are cut off"
    )
    p.add_argument("--pages", help="0-based pages to read, e.g. 0,1,5 (default: all)")
    p.add_argument(
        "--max-chars", type=int, default=24000, help="above this, summarize page by page first"
    )
    llm = p.add_mutually_exclusive_group(required=True)
    llm.add_argument("--llm", help="PROVIDER:MODEL (init_chat_model), e.g. openai:gpt-4o-mini")
    llm.add_argument("--scripted-llm", action="store_true", help="an offline stand-in LLM")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _chat_model(args: argparse.Namespace) -> BaseChatModel:
    if args.scripted_llm:
        return ScriptedChatModel()
    from langchain.chat_models import init_chat_model

    return init_chat_model(args.llm, temperature=0)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # failures are reported below (and in --json); the loader's own warnings would repeat them
    logging.getLogger("langchain_deepseek_ocr").setLevel(logging.ERROR)
    engine = TransformersEngine(
        args.model,
        device=args.device,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    pages = [int(p) for p in args.pages.split(",")] if args.pages else None
    loader = DeepSeekOCRLoader(
        args.input,
        engine=engine,
        resolution=args.resolution,
        pages=pages,
        on_error="record",
        recovery=RecoveryPolicy(enabled=False) if args.no_recovery else None,
    )
    documents = loader.load()
    failures = [d.metadata for d in documents if "error" in d.metadata]
    docs = [d for d in documents if "error" not in d.metadata and d.page_content.strip()]
    flagged = [
        d.metadata["page"] for d in docs if d.metadata["repetition"] or d.metadata["truncated"]
    ]

    llm = _chat_model(args)
    summarize = SUMMARY_PROMPT | llm | StrOutputParser()
    combine = COMBINE_PROMPT | llm | StrOutputParser()
    text = "\n\n".join(f"<!-- page {d.metadata['page']} -->\n{d.page_content}" for d in docs)
    if not docs:
        strategy, summary = "none", ""
    elif len(text) <= args.max_chars:
        strategy, summary = "stuff", summarize.invoke({"text": text})
    else:
        strategy = "map-reduce"
        # map: every page on its own (batched), then reduce the page summaries into one
        page_summaries = summarize.batch([{"text": d.page_content} for d in docs])
        joined = RunnableLambda(
            lambda items: "\n\n".join(
                f"Page {d.metadata['page']}: {s}" for d, s in zip(docs, items, strict=True)
            )
        )
        summary = (joined | (lambda t: {"text": t}) | combine).invoke(page_summaries)

    if args.json:
        report = {
            "source": args.input,
            "pages": [
                {"page": d.metadata["page"], "text": d.page_content, "metadata": d.metadata}
                for d in docs
            ],
            "failures": failures,
            "flagged_pages": flagged,
            "strategy": strategy,
            "summary": summary,
        }
        print(json.dumps(report, ensure_ascii=False))
    else:
        for failure in failures:
            page = failure.get("page")
            where = failure["source"] if page is None else f"{failure['source']} (page {page})"
            print(f"failed: {where}: {failure['error_type']}: {failure['error']}", file=sys.stderr)
        if flagged:
            print(f"warning: pages {flagged} loop or were cut off", file=sys.stderr)
        print(summary)
    return 1 if failures or not docs else 0


if __name__ == "__main__":
    sys.exit(main())
