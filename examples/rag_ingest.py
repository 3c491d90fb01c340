"""Scans and PDFs -> DeepSeek-OCR -> chunks -> vector store -> answers (RAG), in one script.

Real run (a GPU is advisable; the model downloads on first use):

    python examples/rag_ingest.py report.pdf scans/ \
        --model deepseek-ai/DeepSeek-OCR \
        --embedding huggingface:sentence-transformers/all-MiniLM-L6-v2 \
        --llm openai:gpt-4o-mini \
        --query "What was the revenue in Q3?"

Offline (what the tests run, on a tiny random checkpoint):

    python examples/rag_ingest.py doc.pdf --model /tmp/tiny-v1 --device cpu \
        --embedding hash --scripted-llm --query "..." --json

``--embedding hash`` is a local hashed bag of character trigrams: deterministic and free, good
for exact-ish lookups, not for meaning. ``--embedding PROVIDER:MODEL`` and ``--llm
PROVIDER:MODEL`` use LangChain's ``init_embeddings`` / ``init_chat_model`` (``pip install
langchain`` and the provider's package, e.g. ``langchain-openai``).

Every page becomes a Document with ``source`` and ``page`` metadata, so each hit says where it
came from; pages that fail are reported (file, page, reason) and the rest are ingested.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import zlib
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_deepseek_ocr import DeepSeekOCRLoader, RecoveryPolicy, TransformersEngine

ANSWER_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Answer the question from the scanned pages below. Cite pages as (source, page). "
            "If the pages do not contain the answer, say so.",
        ),
        ("human", "Pages:\n\n{context}\n\nQuestion: {question}"),
    ]
)


class HashEmbedding(Embeddings):
    """Hashed bag of character trigrams, L2-normalised (local and deterministic)."""

    def __init__(self, dim: int = 1024) -> None:
        self.dim = dim

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        padded = f"  {text.lower()} "
        for i in range(len(padded) - 2):
            vector[zlib.crc32(padded[i : i + 3].encode("utf-8")) % self.dim] += 1.0
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector] if norm else vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


class ScriptedChatModel(BaseChatModel):
    """A stand-in chat model for offline runs: it quotes the start of the prompt it got."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        prompt = str(messages[-1].content)
        reply = f"[scripted answer from a {len(prompt)}-character prompt] {prompt[:300]}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="images, PDFs, folders or glob patterns")
    p.add_argument("--model", default="deepseek-ai/DeepSeek-OCR", help="hub id or folder")
    p.add_argument("--device", help="cuda, mps or cpu (default: best available)")
    p.add_argument("--batch-size", type=int, default=8, help="pages per engine call")
    p.add_argument("--max-new-tokens", type=int, default=8192, help="token limit per page")
    p.add_argument("--resolution", help="tiny, small, base, large or gundam (default)")
    p.add_argument(
        "--no-recovery", action="store_true", help="do not retry pages that loop or are cut off"
    )
    p.add_argument("--task", default="markdown", help="markdown (default), ocr or free")
    p.add_argument("--chunk-size", type=int, default=1000, help="characters per chunk")
    p.add_argument("--chunk-overlap", type=int, default=100, help="overlap between chunks")
    p.add_argument(
        "--embedding", default="hash", help="'hash' (local) or PROVIDER:MODEL (init_embeddings)"
    )
    p.add_argument("--query", action="append", default=[], help="a question (repeatable)")
    p.add_argument("-k", "--k", type=int, default=4, help="chunks retrieved per question")
    llm = p.add_mutually_exclusive_group()
    llm.add_argument("--llm", help="PROVIDER:MODEL to answer with (init_chat_model)")
    llm.add_argument("--scripted-llm", action="store_true", help="an offline stand-in LLM")
    p.add_argument("--progress", action="store_true", help="a progress bar over pages")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _embeddings(spec: str) -> Embeddings:
    if spec == "hash":
        return HashEmbedding()
    from langchain.embeddings import init_embeddings

    return init_embeddings(spec)


def _chat_model(args: argparse.Namespace) -> BaseChatModel | None:
    if args.scripted_llm:
        return ScriptedChatModel()
    if args.llm:
        from langchain.chat_models import init_chat_model

        return init_chat_model(args.llm, temperature=0)
    return None


def _format(hits: list[Document]) -> str:
    return "\n\n".join(
        f"[{d.metadata.get('source')}, page {d.metadata.get('page')}]\n{d.page_content}"
        for d in hits
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # failures are reported below (and in --json); the loader's own warnings would repeat them
    logging.getLogger("langchain_deepseek_ocr").setLevel(logging.ERROR)
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    engine = TransformersEngine(
        args.model,
        device=args.device,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    loader = DeepSeekOCRLoader(
        args.inputs,
        engine=engine,
        task=args.task,
        resolution=args.resolution,
        on_error="record",
        recovery=RecoveryPolicy(enabled=False) if args.no_recovery else None,
        show_progress=args.progress,
    )
    documents = loader.load()
    failures = [d.metadata for d in documents if "error" in d.metadata]
    pages = [d for d in documents if "error" not in d.metadata]
    flagged = [d.metadata for d in pages if d.metadata["repetition"] or d.metadata["truncated"]]

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap
    )
    chunks = splitter.split_documents([d for d in pages if d.page_content.strip()])
    store = InMemoryVectorStore(_embeddings(args.embedding))
    if chunks:
        store.add_documents(chunks)

    llm = _chat_model(args)
    answer_chain = ANSWER_PROMPT | llm | StrOutputParser() if llm is not None else None
    answers = []
    for query in args.query:
        hits = store.similarity_search_with_score(query, k=args.k) if chunks else []
        docs = [doc for doc, _score in hits]
        answer = None
        if answer_chain is not None and docs:
            answer = answer_chain.invoke({"context": _format(docs), "question": query})
        answers.append(
            {
                "query": query,
                "hits": [
                    {
                        "source": doc.metadata.get("source"),
                        "page": doc.metadata.get("page"),
                        "score": round(score, 4),
                        "text": doc.page_content,
                    }
                    for doc, score in hits
                ],
                "answer": answer,
            }
        )

    if args.json:
        report = {
            "pages": len(pages),
            "chunks": len(chunks),
            "failures": failures,
            "flagged": flagged,
            "answers": answers,
        }
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(f"ingested {len(pages)} pages as {len(chunks)} chunks")
        for failure in failures:
            where = failure.get("source")
            if failure.get("page") is not None:
                where = f"{where} (page {failure['page']})"
            print(f"  failed: {where}: {failure['error_type']}: {failure['error']}")
        for page in flagged:
            print(f"  check: {page['source']} page {page['page']} (looping or cut off)")
        for item in answers:
            print(f"\nQ: {item['query']}")
            for hit in item["hits"]:
                print(f"  {hit['score']:.3f}  {hit['source']} page {hit['page']}")
            if item["answer"] is not None:
                print(f"A: {item['answer']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
