"""RAG_EMBED_URL: an OpenAI-compatible `/v1/embeddings` server (text-embeddings-inference, vLLM, Ollama, llama.cpp's
server, ...) embeds while indexing, so a large corpus can be indexed on a GPU box and searched on a laptop.

Questions are still embedded by the local model, so the server must give the local model's vectors: `check()`
compares them on a few sentences before anything is embedded. The chunker still counts tokens with the local
tokenizer. The server embeds the texts the local model would (sentences, and heads or chunks).
"""

from __future__ import annotations

import numpy as np

from rag.models import ModelError, load_embedder
from rag.settings import Settings, error_line, mask_url

# Abstract-like sentences, short and long, for the check; the local model's float32 vectors are the reference.
CHECK_SENTENCES = (
    "We propose a parameter-efficient method for fine-tuning large language models.",
    "Experiments on three benchmarks show that our approach improves accuracy by 4.2 points over strong baselines.",
    "Diffusion models generate high-quality images but require many sampling steps.",
    "The code is available online.",
    "Protein structure prediction",
    "Results indicate that the treatment reduced mortality in patients with sepsis (p < 0.01), whereas the control "
    "group showed no significant change over the 12-week follow-up period.",
)
MIN_COSINE = 0.99  # a float32 or float16 server of the same model gives > 0.999; another model < 0.9


class EmbeddingServerError(ModelError):
    """The embedding server cannot be used: unreachable, failing, or giving another model's vectors."""


class RemoteEmbedding:
    """`encode` and `token_ids` as the local embedders have them; `encode` sends `batch` texts per request, and
    indexing keeps `parallel` requests in flight (rag.index.embed_texts). Failed requests (connection errors,
    timeouts, 408/409/429/5xx) are retried with exponential backoff by the openai client."""

    def __init__(self, settings: Settings, local):
        from openai import OpenAI

        self.local = local
        self.url = settings.embed_url
        self.model = settings.embed_url_model
        self.batch = settings.embed_url_batch
        self.parallel = settings.embed_url_parallel
        self.reference = settings.embed_model, settings.embed_runtime
        key = settings.embed_url_key.get_secret_value() if settings.embed_url_key else "none"
        self.client = OpenAI(
            base_url=self.url, api_key=key, max_retries=settings.embed_url_retries, timeout=settings.embed_url_timeout
        )

    def token_ids(self, text: str) -> list[int]:
        return self.local.token_ids(text)

    def encode(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch):
            out += self.request(texts[start : start + self.batch])
        return out

    def request(self, texts: list[str]) -> list[list[float]]:
        import openai

        where = mask_url(self.url)
        try:
            # floats, not the client's default base64: llama.cpp's server and older TEI versions answer floats only
            response = self.client.embeddings.create(model=self.model, input=texts, encoding_format="float")
        except openai.APIError as e:
            message = f"the embedding server {where} (RAG_EMBED_URL) failed: {error_line(e)}"
            raise EmbeddingServerError(message) from None
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise EmbeddingServerError(
                f"the embedding server {where} (RAG_EMBED_URL) returned {len(data)} vectors for {len(texts)} texts"
            )
        vectors = np.asarray([d.embedding for d in data], dtype=np.float32)
        vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)  # not every server normalizes
        return vectors.tolist()

    def check(self) -> None:
        """The server's vectors against the local model's float32 ones on CHECK_SENTENCES: the same dimension and
        cosine >= MIN_COSINE on each, else an EmbeddingServerError (one line) before anything is embedded.

        Float32 is the reference because a correct server computes in float32 or float16 (cosine > 0.999); the
        local int8 model differs from float32 by cosine 0.982-0.999 per sentence (0.992 mean; bundled sentences),
        which would make a correct server fail one sentence in five."""
        name, runtime = self.reference
        reference = load_embedder(name, "onnx" if runtime == "onnx-int8" else runtime)
        local = np.asarray(reference.encode(list(CHECK_SENTENCES)), dtype=np.float32)
        served = np.asarray(self.request(list(CHECK_SENTENCES)), dtype=np.float32)
        where = f"the embedding server {mask_url(self.url)} (RAG_EMBED_URL, model {self.model!r})"
        if served.shape[1] != local.shape[1]:
            raise EmbeddingServerError(
                f"{where} gives {served.shape[1]}-dimensional vectors, the local model {local.shape[1]}: "
                "serve the model of RAG_EMBED_MODEL; the existing index is unchanged"
            )
        cosines = (served * local).sum(1)
        worst = int(cosines.argmin())
        if cosines[worst] < MIN_COSINE:
            raise EmbeddingServerError(
                f"{where} does not give the local model's vectors (cosine {cosines[worst]:.3f} < {MIN_COSINE} on "
                f"{CHECK_SENTENCES[worst][:40]!r}): serve the model of RAG_EMBED_MODEL; the existing index is unchanged"
            )
