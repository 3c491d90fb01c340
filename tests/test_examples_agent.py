"""examples/agent_tool.py runs: as a script, offline, on the tiny checkpoint with --scripted."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import noise_image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent_tool.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agent_tool_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    path = tmp_path / "docs" / "scan.png"
    path.parent.mkdir()
    noise_image(500, 400, seed=2).save(path)
    return path


def test_example_runs_as_a_script(tiny_v1_dir: Path, scan: Path) -> None:
    command = [
        sys.executable,
        str(EXAMPLE),
        str(scan),
        "--model",
        str(tiny_v1_dir),
        "--scripted",
        "--device",
        "cpu",
        "--max-new-tokens",
        "8",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "== question\nWhat does this image say?" in out
    assert '== tool call: deepseek_ocr {"image": "scan.png"}' in out
    assert "== tool result (success)\nvision tokens: 273, output tokens: " in out
    assert "resolution: gundam, image: 500x400 px" in out
    assert "== answer\nHere is what the image says:" in out


def test_example_attaches_the_image(
    tiny_v1_dir: Path, scan: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example()
    argv = [str(scan), "--model", str(tiny_v1_dir), "--scripted", "--attach"]
    assert example.main([*argv, "--device", "cpu", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "== tool call: deepseek_ocr {}" in out  # the image travels in the conversation
    assert "vision tokens: 273" in out
    assert "image: 500x400 px" in out
    assert "== answer\nHere is what the image says:" in out


def test_example_arguments(scan: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example()
    with pytest.raises(SystemExit) as exit_info:
        example.main([str(scan)])  # neither --chat-model nor --scripted
    assert exit_info.value.code == 2
    assert "pass either --chat-model MODEL_ID or --scripted" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        example.main([str(scan.parent / "missing.png"), "--scripted"])
    assert "is not a file" in capsys.readouterr().err
