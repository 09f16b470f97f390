"""The embeddings endpoint of the OpenAI API or of an OpenAI-compatible server (vLLM, llama.cpp, TEI, ...) as an
`Embedder`: the "openai" back-end of `knowledge.dense_embedders.open_embedder`.

One probe request at open time learns (or checks) the dimension, so a misconfigured server fails the start, not
the first incident. Every request is bounded by the configured timeout and not retried (EmbeddingFailed: the
caller decides). Vectors are L2-normalised. The openai package is imported only when a client is made.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from knowledge.dense_embedders import EmbedderUnavailable, EmbeddingConfig, EmbeddingFailed, unit_vector

log = logging.getLogger(__name__)

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROBE_TEXT = "dimension probe"


class OpenAICompatibleEmbedder:
    """The embeddings endpoint of an OpenAI-compatible server, in requests of at most `batch_size` texts.

    The client does not retry (max_retries=0): each request is bounded by `timeout_s`, and whether to try again
    is the caller's decision (EmbeddingFailed)."""

    def __init__(
        self, client: Any, *, base_url: str, model: str, dimension: int | None, batch_size: int, timeout_s: float
    ) -> None:
        self._client = client
        self._base_url = base_url
        self._model = model
        self._requested_dimension = dimension
        self._dimension = dimension
        self._batch_size = batch_size
        self._timeout_s = timeout_s

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise RuntimeError("the embedder's dimension is not known before its probe")
        return self._dimension

    @property
    def model_id(self) -> str:
        return f"openai:{self._model}@{self.dimension}"

    @classmethod
    async def open(cls, config: EmbeddingConfig) -> OpenAICompatibleEmbedder:
        from openai import AsyncOpenAI

        base_url = config.openai_base_url or OPENAI_DEFAULT_BASE_URL
        api_key = config.openai_api_key.get_secret_value() if config.openai_api_key is not None else "none"
        client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=config.timeout_s, max_retries=0)
        embedder = cls(
            client, base_url=base_url, model=config.openai_model, dimension=config.dimension,
            batch_size=config.batch_size, timeout_s=config.timeout_s,
        )  # fmt: skip
        try:
            [probe] = await embedder._request([PROBE_TEXT])
        except EmbeddingFailed as exc:
            await client.close()
            raise EmbedderUnavailable(
                f"the embedding server does not work: {exc} (check OPSWARM_EMBEDDING__OPENAI_BASE_URL, "
                "__OPENAI_MODEL, __OPENAI_API_KEY and __DIMENSION)"
            ) from exc
        embedder._dimension = len(probe)
        log.info("embedding server probed", extra={"base_url": base_url, "model_id": embedder.model_id})
        return embedder

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            vectors.extend(await self._request(list(texts[start : start + self._batch_size])))
        return vectors

    async def _request(self, batch: list[str]) -> list[list[float]]:
        import openai

        extra: dict[str, Any] = {} if self._requested_dimension is None else {"dimensions": self._requested_dimension}
        where = f"{self._base_url} (model {self._model})"
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.embeddings.create(
                    model=self._model, input=batch, encoding_format="float", **extra
                )
        except TimeoutError as exc:
            raise self._failed(f"no answer from {where} within {self._timeout_s} s", len(batch)) from exc
        except openai.APITimeoutError as exc:
            raise self._failed(f"no answer from {where} within {self._timeout_s} s", len(batch)) from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise self._failed(f"cannot reach {where}: {type(cause).__name__}: {cause}", len(batch)) from exc
        except openai.APIStatusError as exc:
            raise self._failed(f"{where} answered {exc.status_code}: {str(exc.message)[:300]}", len(batch)) from exc
        except openai.OpenAIError as exc:
            raise self._failed(f"embedding request to {where} failed: {exc}", len(batch)) from exc
        return self._vectors(response, len(batch), where)

    def _vectors(self, response: Any, count: int, where: str) -> list[list[float]]:
        data = list(getattr(response, "data", None) or [])
        indices = sorted(getattr(item, "index", None) for item in data if isinstance(getattr(item, "index", None), int))
        if len(data) != count or indices != list(range(count)):
            raise self._failed(f"{where} answered {len(data)} embeddings for {count} texts, or bad indices", count)
        ordered = sorted(data, key=lambda item: item.index)
        lengths = {len(item.embedding) for item in ordered if isinstance(item.embedding, list)}
        if len(lengths) != 1 or any(not isinstance(item.embedding, list) for item in ordered):
            raise self._failed(f"{where} answered embeddings that are not float lists of one length", count)
        [length] = lengths
        if self._dimension is not None and length != self._dimension:
            raise self._failed(f"{where} answered {length} dimensions, expected {self._dimension}", count)
        try:
            return [unit_vector(item.embedding) for item in ordered]
        except (EmbeddingFailed, TypeError, ValueError) as exc:
            raise self._failed(f"{where} answered unusable embeddings: {exc}", count) from exc

    def _failed(self, message: str, count: int) -> EmbeddingFailed:
        log.warning("embedding request failed", extra={"base_url": self._base_url, "texts": count, "reason": message})
        return EmbeddingFailed(message)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()
