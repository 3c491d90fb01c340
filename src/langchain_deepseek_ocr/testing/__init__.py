"""Test support: tiny random-weight DeepSeek-OCR checkpoints in the real layouts.

No real weights can be downloaded in CI, so tests, examples and benchmarks build small
checkpoints with the real transformers classes, save them the way the published ones are
laid out, and load them back through exactly the path a real checkpoint takes.
"""

from langchain_deepseek_ocr.testing._checkpoints import (
    SPECIAL_TOKENS,
    build_tiny_tokenizer,
    build_tiny_v1,
    build_tiny_v2,
    v1_published_config,
)
from langchain_deepseek_ocr.testing._scripted import Script, ScriptedEngine

__all__ = [
    "SPECIAL_TOKENS",
    "Script",
    "ScriptedEngine",
    "build_tiny_tokenizer",
    "build_tiny_v1",
    "build_tiny_v2",
    "v1_published_config",
]
