"""End to end, offline, on the tiny real model: loader -> splitter -> vector store -> retriever,
and an LCEL chain OCR -> text -> prompt -> chat model.

The tiny checkpoint has random weights, so its output is gibberish -- but deterministic and
different from page to page, which is all retrieval needs to be checked: the query made from
a page's text must bring back that page (source and page number).
"""

from __future__ import annotations

import io
import math
import zlib
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_text_splitters import RecursiveCharacterTextSplitter
from pydantic import Field

from conftest import noise_image
from langchain_deepseek_ocr import DeepSeekOCR, RecoveryPolicy
from langchain_deepseek_ocr._documents import result_to_documents
from langchain_deepseek_ocr._loader import DeepSeekOCRLoader

pytestmark = pytest.mark.slow

RESOLUTION = "base"  # one 1024 view: fast on CPU, and page-specific output on the tiny model
# The tiny engine writes 8 tokens, so every page is "cut off" and the default recovery would
# run it twice; it has its own tests, so it is off here.
NO_RETRY = RecoveryPolicy(enabled=False)


class TrigramEmbedding(Embeddings):
    """Hashed bag of character trigrams, L2-normalised: deterministic and local."""

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        padded = f"  {text} "
        for i in range(len(padded) - 2):
            vector[zlib.crc32(padded[i : i + 3].encode("utf-8")) % self.dim] += 1.0
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector] if norm else vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


class RecordingChatModel(BaseChatModel):
    """A scripted chat model: records every prompt it receives, answers with a fixed reply."""

    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    reply: str = "A one-line summary."

    @property
    def _llm_type(self) -> str:
        return "recording-fake"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.prompts.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.reply))])


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A 3-page PDF whose pages differ (a different noise image on each) and two images."""
    import pymupdf

    folder = tmp_path_factory.mktemp("scans")
    doc = pymupdf.open()
    for i in range(3):
        page = doc.new_page(width=300, height=400)
        buf = io.BytesIO()
        noise_image(300, 400, seed=10 + i).save(buf, format="PNG")
        page.insert_image(page.rect, stream=buf.getvalue())
    doc.save(folder / "report.pdf")
    doc.close()
    noise_image(320, 240, seed=1).save(folder / "receipt.png")
    noise_image(240, 320, seed=2).save(folder / "letter.png")
    return [folder / "report.pdf", folder / "receipt.png", folder / "letter.png"]


@pytest.fixture(scope="module")
def pages(v1_engine, scans) -> list[Document]:
    return DeepSeekOCRLoader(
        scans, engine=v1_engine, resolution=RESOLUTION, recovery=NO_RETRY
    ).load()


def _where(doc: Document) -> tuple[str, int]:
    return Path(doc.metadata["source"]).name, doc.metadata["page"]


def test_loader_splitter_vector_store_retriever_returns_the_right_page(pages):
    assert [_where(d) for d in pages] == [
        ("report.pdf", 0),
        ("report.pdf", 1),
        ("report.pdf", 2),
        ("receipt.png", 0),
        ("letter.png", 0),
    ]
    texts = [d.page_content for d in pages]
    assert all(texts)
    assert len(set(texts)) == len(texts), "the tiny model's pages must differ for this test"

    splitter = RecursiveCharacterTextSplitter(chunk_size=200, chunk_overlap=20)
    chunks = splitter.split_documents(pages)
    assert {_where(c) for c in chunks} == {_where(d) for d in pages}
    assert all(c.metadata["model"] == pages[0].metadata["model"] for c in chunks)

    store = InMemoryVectorStore(TrigramEmbedding())
    store.add_documents(chunks)
    retriever = store.as_retriever(search_kwargs={"k": 1})
    for page in pages:
        (hit,) = retriever.invoke(page.page_content)
        assert _where(hit) == _where(page)
        assert hit.metadata["total_pages"] == page.metadata["total_pages"]
        assert hit.metadata["resolution"] == RESOLUTION


def test_lcel_chain_puts_the_page_markdown_in_the_prompt(v1_engine, scans, pages):
    ocr = DeepSeekOCR(engine=v1_engine, resolution=RESOLUTION, recovery=NO_RETRY)
    model = RecordingChatModel()
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Summarize the scanned page."), ("human", "Page:\n\n{page}")]
    )
    to_text = RunnableLambda(lambda result: {"page": result.text})
    chain = ocr | to_text | prompt | model

    answer = chain.invoke({"image": str(scans[0]), "page": 1})
    assert answer.content == "A one-line summary."
    # the loader read the same page with the same engine: the same markdown
    expected = pages[1].page_content
    assert expected
    (sent,) = model.prompts
    assert sent[0].content == "Summarize the scanned page."
    assert sent[1].content == f"Page:\n\n{expected}"

    # the same chain over several inputs, and the Document helper as a chain step
    model.prompts.clear()
    chain.batch([str(scans[1]), str(scans[2])])
    texts = [pages[3].page_content, pages[4].page_content]
    assert sorted(m[1].content for m in model.prompts) == sorted(f"Page:\n\n{t}" for t in texts)

    to_docs = ocr | RunnableLambda(lambda result: result_to_documents(result, total_pages=3))
    (doc,) = to_docs.invoke({"image": str(scans[0]), "page": 2})
    assert _where(doc) == ("report.pdf", 2)
    assert doc.metadata["total_pages"] == 3
