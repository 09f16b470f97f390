"""The optional language model of diagnosis and planning: its configuration and autogen's client for it.

Any OpenAI-compatible chat completions endpoint works (OpenAI, vLLM, Ollama, LiteLLM): `OPSWARM_LLM__BASE_URL`,
`OPSWARM_LLM__MODEL`, `OPSWARM_LLM__API_KEY`. Without a base URL there is no model and diagnosis takes the
deterministic path (said once per process in the log). For model names autogen does not know, the capabilities
(`OPSWARM_LLM__FUNCTION_CALLING`, `OPSWARM_LLM__STRUCTURED_OUTPUT`, ...) must be given; for the OpenAI names
autogen knows, its own model info is used unless a capability is overridden.

The client never retries (a failed request is the caller's to handle: it falls back to the deterministic path)
and every request is bounded by `timeout_s`. Token use is taken from the `usage` the server returns
(`usage_of`): the client's `count_tokens`/`remaining_tokens` need tiktoken's encodings, which are downloaded on
first use and are not there offline, so nothing here calls them.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from autogen_core.models import ChatCompletionClient, CreateResult, ModelInfo
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

log = logging.getLogger(__name__)

ENV_PREFIX = "OPSWARM_LLM__"

# Said once per process: every incident would otherwise repeat it.
_disabled_logged = False


class LlmConfigError(ValueError):
    """The LLM settings cannot make a client; the message names the OPSWARM_LLM__ setting to set."""


class LlmConfig(BaseModel):
    """The model endpoint, its capabilities, its per-request limits and the budgets of one incident."""

    model_config = ConfigDict(frozen=True)

    # None (or empty): no model, the deterministic path. Otherwise e.g. http://127.0.0.1:8000/v1.
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    api_key: SecretStr | None = None
    # Capabilities: required for model names autogen does not know; overrides for those it does.
    function_calling: bool | None = None
    structured_output: bool | None = None
    json_output: bool | None = None
    vision: bool = False
    family: str = "unknown"
    # Each request; the SDK does not retry (max_retries=0): the caller's fallback handles a failure.
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=0, ge=0)
    temperature: float = Field(default=0.0, ge=0)
    max_tokens_per_reply: int = Field(default=1024, gt=0)
    # Budgets of one incident's model use.
    max_tool_steps: int = Field(default=6, ge=0)
    max_wall_s: float = Field(default=60.0, gt=0)
    max_tokens_per_incident: int = Field(default=20000, gt=0)
    # The model's confidence is taken as it says, up to this: risk scoring must not trust a model's certainty.
    max_confidence: float = Field(default=0.9, ge=0, le=1)
    # How long an accepted answer is reused for the same question (same fingerprint and evidence).
    cache_ttl_s: float = Field(default=3600.0, gt=0)

    @field_validator("base_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise LlmConfigError(f"{ENV_PREFIX}BASE_URL must be an http:// or https:// URL, got {value!r}")
        return value

    @field_validator("model")
    @classmethod
    def _model_named(cls, value: str) -> str:
        if not value.strip():
            raise LlmConfigError(f"{ENV_PREFIX}MODEL must name the model the endpoint serves")
        return value.strip()

    @property
    def enabled(self) -> bool:
        return self.base_url is not None


def known_model_info(model: str) -> ModelInfo | None:
    """autogen's own model info for an OpenAI model name it knows (directly or through a dated alias), else None."""
    from autogen_ext.models.openai import _model_info

    info = _model_info._MODEL_INFO.get(_model_info.resolve_model(model))
    return dict(info) if info is not None else None  # type: ignore[return-value]


def model_info_for(config: LlmConfig) -> ModelInfo | None:
    """The model info to give autogen: None to let it use its own (a known name, nothing overridden)."""
    known = known_model_info(config.model)
    explicit = config.model_fields_set
    overrides: dict[str, Any] = {
        name: getattr(config, name)
        for name in ("function_calling", "structured_output", "json_output")
        if getattr(config, name) is not None
    }
    overrides.update({name: getattr(config, name) for name in ("vision", "family") if name in explicit})
    if known is not None:
        if not overrides:
            return None
        return ModelInfo(**{**known, **overrides})  # type: ignore[typeddict-item]
    missing = [name for name in ("function_calling", "structured_output") if getattr(config, name) is None]
    if missing:
        settings = " and ".join(f"{ENV_PREFIX}{name.upper()}" for name in missing)
        raise LlmConfigError(
            f"autogen does not know the model {config.model!r}: set {settings} (true or false) to what it supports"
        )
    structured = bool(config.structured_output)
    return ModelInfo(
        vision=config.vision,
        function_calling=bool(config.function_calling),
        # JSON mode unless said otherwise when the server does structured output, which implies it.
        json_output=structured if config.json_output is None else config.json_output,
        family=config.family,
        structured_output=structured,
    )


def build_model_client(config: LlmConfig) -> ChatCompletionClient | None:
    """autogen's OpenAI-compatible client for the configured endpoint; None without one (the deterministic path).

    Raises LlmConfigError when the settings cannot make a client. The caller closes the client (`await
    client.close()`)."""
    global _disabled_logged
    if not config.enabled:
        if not _disabled_logged:
            _disabled_logged = True
            log.info(
                "no LLM configured: diagnosis takes the deterministic path",
                extra={"setting": f"{ENV_PREFIX}BASE_URL"},
            )
        return None
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    # openai's SDK types a parsed completion's `parsed` as None, so dumping one with structured output warns on
    # every call (openai/openai-python#2872); the value is right, only the type hint is not.
    warnings.filterwarnings(
        "ignore",
        message=r"Pydantic serializer warnings:\s+PydanticSerializationUnexpectedValue\(Expected `none`[^\n]*"
        r"field_name='parsed'",
        category=UserWarning,
    )
    model_info = model_info_for(config)
    kwargs: dict[str, Any] = {
        "model": config.model,
        "base_url": config.base_url,
        "api_key": config.api_key.get_secret_value() if config.api_key is not None else "none",
        "timeout": config.timeout_s,
        "max_retries": config.max_retries,
        "temperature": config.temperature,
        "max_tokens": config.max_tokens_per_reply,
    }
    if model_info is not None:
        kwargs["model_info"] = model_info
    try:
        client = OpenAIChatCompletionClient(**kwargs)
    except ValueError as exc:
        raise LlmConfigError(f"{ENV_PREFIX}MODEL {config.model!r} and its capabilities: {exc}") from exc
    log.info(
        "LLM configured",
        extra={
            "base_url": config.base_url, "model": config.model, "timeout_s": config.timeout_s,
            "function_calling": client.model_info["function_calling"],
            "structured_output": client.model_info.get("structured_output", False),
        },
    )  # fmt: skip
    return client


def usage_of(result: CreateResult) -> tuple[int, int]:
    """(prompt, completion) tokens of one reply, as the server counted them; 0 for what it did not say."""
    usage = result.usage
    if usage is None:
        return 0, 0
    return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
