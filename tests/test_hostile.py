"""A corpus of 50+ hostile inputs: each ends in its typed error or a correct result.

The corpus comes from ``langchain_deepseek_ocr.testing.hostile_inputs``. Here it goes through
the facade on the tiny real model, one input at a time and all at once in a batch (where
the good inputs must all arrive), and through the CLI. pytest-timeout bounds every test, so
a hang fails.
"""

import pytest

from conftest import noise_image
from langchain_deepseek_ocr import DeepSeekOCR, DeepSeekOCRError, InputLimits, OCRResult
from langchain_deepseek_ocr._recovery import RecoveryPolicy
from langchain_deepseek_ocr.testing._hostile import hostile_inputs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return hostile_inputs(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def ocr(tiny_v1_dir):
    from langchain_deepseek_ocr import TransformersEngine

    engine = TransformersEngine(str(tiny_v1_dir), device="cpu", max_new_tokens=2)
    return DeepSeekOCR(engine=engine, recovery=RecoveryPolicy(enabled=False))


@pytest.fixture(scope="module")
def scripted():
    """The tools and the loader read inputs before any engine runs: a scripted engine
    keeps these two runs fast (the facade tests above run the corpus on the real model)."""
    from langchain_deepseek_ocr.testing import ScriptedEngine

    return DeepSeekOCR(engine=ScriptedEngine("Free text."), recovery=RecoveryPolicy(enabled=False))


def test_the_corpus_is_large_and_mixed(corpus):
    assert len(corpus) >= 40
    assert sum(c.error is None for c in corpus) >= 15
    assert sum(c.error is not None for c in corpus) >= 30
    assert len({c.name for c in corpus}) == len(corpus)


@pytest.mark.timeout(120)
def test_every_hostile_input_through_the_facade(ocr, corpus):
    failures = []
    for case in corpus:
        runner = ocr
        if case.limits:
            runner = DeepSeekOCR(
                engine=ocr.engine, recovery=ocr.recovery, limits=InputLimits(**case.limits)
            )
        try:
            result = runner.ocr(case.value)
        except DeepSeekOCRError as exc:
            if case.error is None or not isinstance(exc, case.error):
                failures.append(f"{case.name}: raised {type(exc).__name__}: {exc}")
            elif exc.source is None or not str(exc):
                failures.append(f"{case.name}: error does not name its input")
            continue
        except Exception as exc:  # an untyped error is a failure of the package
            failures.append(f"{case.name}: untyped {type(exc).__name__}: {exc}")
            continue
        if case.error is not None:
            failures.append(f"{case.name}: expected {case.error.__name__}, got a result")
        elif not isinstance(result, OCRResult) or (case.size and result.image_size != case.size):
            failures.append(f"{case.name}: wrong result {getattr(result, 'image_size', None)}")
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(120)
def test_a_batch_of_all_of_them_keeps_every_good_input(scripted, corpus):
    plain = [c for c in corpus if not c.limits]
    good = noise_image(320, 240)
    inputs = [good, *[c.value for c in plain], good]
    out = scripted.batch(inputs, return_exceptions=True)
    assert len(out) == len(inputs)
    assert isinstance(out[0], OCRResult)
    assert isinstance(out[-1], OCRResult)
    for case, item in zip(plain, out[1:-1], strict=True):
        if case.error is None:
            assert isinstance(item, OCRResult), (case.name, item)
        else:
            assert isinstance(item, case.error), (case.name, item)


@pytest.mark.timeout(180)
def test_the_cli_reports_each_bad_file_and_writes_the_rest(tiny_v1_dir, corpus, tmp_path, capsys):
    from langchain_deepseek_ocr.cli import main

    files = [c for c in corpus if not c.limits and hasattr(c.value, "is_file")]
    files = [c for c in files if c.value.is_file()]
    code = main(
        [
            *(str(c.value) for c in files),
            "--model",
            str(tiny_v1_dir),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
            "--max-new-tokens",
            "2",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    bad = [c for c in files if c.error is not None]
    assert code == (1 if bad else 0)
    for case in bad:
        assert case.value.name in err, case.name
    for case in files:
        assert (tmp_path / "out" / f"{case.value.stem}.md").exists() or case.value.stem in err


def _as_files(corpus, folder):
    """Every corpus case that can be a file, as a file under ``folder`` (bytes written out)."""
    import io
    import shutil

    from PIL import Image

    folder.mkdir(exist_ok=True)
    files = []
    for case in corpus:
        if case.limits:
            continue
        value = case.value
        if isinstance(value, Image.Image):
            if 0 in value.size:
                continue
            buffer = io.BytesIO()
            value.save(buffer, format="PNG")
            value = buffer.getvalue()
        if isinstance(value, bytes):
            path = folder / f"{case.name}.png"
            path.write_bytes(value)
        elif hasattr(value, "is_file") and value.is_file():
            path = folder / value.name
            shutil.copyfile(value, path)
        else:
            continue
        files.append((case, path))
    return files


@pytest.mark.timeout(300)
def test_every_hostile_file_through_the_tool(scripted, corpus, tmp_path):
    from langchain_deepseek_ocr import DeepSeekOCRTool

    files = _as_files(corpus, tmp_path / "root")
    assert len(files) >= 30
    tool = DeepSeekOCRTool(engine=scripted, allowed_roots=[tmp_path / "root"])
    outside = [c for c in corpus if hasattr(c.value, "is_file") and not c.value.is_file()]
    outside += [c for c in corpus if isinstance(c.value, str)]
    failures = []
    calls = [(case, path.name) for case, path in files] + [(c, str(c.value)) for c in outside]
    for index, (case, argument) in enumerate(calls):
        message = tool.invoke(
            {"type": "tool_call", "id": f"c{index}", "name": tool.name, "args": {"image": argument}}
        )
        ok = message.status == "success"
        if case.error is None and case.name not in ("url-string",):
            if not ok or (case.size and message.artifact.image_size != case.size):
                failures.append(f"{case.name}: {message.status} {message.content[:120]}")
        elif ok:
            failures.append(f"{case.name}: expected an error, got a result")
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(300)
def test_every_hostile_file_through_the_loader(scripted, corpus, tmp_path):
    from langchain_deepseek_ocr import DeepSeekOCRLoader

    files = _as_files(corpus, tmp_path / "in")
    paths = [path for _case, path in files]
    loader = DeepSeekOCRLoader(paths, engine=scripted, on_error="record")
    docs = loader.load()
    by_source: dict[str, list] = {}
    for doc in docs:
        by_source.setdefault(doc.metadata["source"], []).append(doc)
    expected_pages = {"multi-frame-tiff": 3, "a4-pdf": 3}
    for case, path in files:
        got = by_source.get(str(path), [])
        if case.error is None:
            pages = expected_pages.get(case.name, 1)
            assert len(got) == pages, (case.name, [d.metadata for d in got])
            assert all("error" not in d.metadata for d in got), case.name
        else:
            assert len(got) == 1, (case.name, [d.metadata for d in got])
            assert got[0].metadata["error_type"] == case.error.__name__, case.name
    good_pages = sum(expected_pages.get(c.name, 1) for c, _p in files if c.error is None)
    bad = sum(1 for c, _p in files if c.error is not None)
    assert len(docs) == good_pages + bad
