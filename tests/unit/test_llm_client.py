"""The LLM settings: how the environment fills them, the deterministic path without a base URL, and the model info
autogen's client is given."""

from __future__ import annotations

import logging

import pytest
from autogen_core.models import CreateResult, RequestUsage
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from knowledge import llm_client
from knowledge.llm_client import LlmConfig, LlmConfigError, build_model_client, model_info_for, usage_of

DISABLED_MESSAGE = "no LLM configured: diagnosis takes the deterministic path"


class _ProcessSettings(BaseSettings):
    """How a process's Settings nest the LLM's."""

    model_config = SettingsConfigDict(env_prefix="OPSWARM_", env_nested_delimiter="__", extra="ignore")

    llm: LlmConfig = LlmConfig()


@pytest.fixture(autouse=True)
def _no_llm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BASE_URL", "MODEL", "API_KEY", "FUNCTION_CALLING", "STRUCTURED_OUTPUT", "JSON_OUTPUT", "TIMEOUT_S"):
        monkeypatch.delenv(f"OPSWARM_LLM__{name}", raising=False)
    monkeypatch.setattr(llm_client, "_disabled_logged", False)


def test_defaults() -> None:
    config = _ProcessSettings().llm
    assert not config.enabled
    assert (config.base_url, config.model, config.api_key) == (None, "gpt-4o-mini", None)
    assert (config.timeout_s, config.max_retries, config.temperature, config.max_tokens_per_reply) == (30, 0, 0, 1024)
    assert (config.max_tool_steps, config.max_wall_s, config.max_tokens_per_incident) == (6, 60, 20000)


def test_environment_nests_under_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSWARM_LLM__BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("OPSWARM_LLM__MODEL", "qwen2.5-7b-instruct")
    monkeypatch.setenv("OPSWARM_LLM__API_KEY", "sk-very-secret")
    monkeypatch.setenv("OPSWARM_LLM__FUNCTION_CALLING", "true")
    monkeypatch.setenv("OPSWARM_LLM__STRUCTURED_OUTPUT", "false")
    monkeypatch.setenv("OPSWARM_LLM__TIMEOUT_S", "7.5")
    settings = _ProcessSettings()
    config = settings.llm
    assert config.enabled
    assert (config.base_url, config.model, config.timeout_s) == ("http://127.0.0.1:8000/v1", "qwen2.5-7b-instruct", 7.5)
    assert (config.function_calling, config.structured_output, config.json_output) == (True, False, None)
    assert config.api_key is not None and config.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(config)
    assert "sk-very-secret" not in config.model_dump_json()


def test_empty_base_url_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSWARM_LLM__BASE_URL", "")
    assert _ProcessSettings().llm.base_url is None
    assert LlmConfig(base_url="  ").enabled is False


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        LlmConfig().model = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"base_url": "127.0.0.1:8000/v1"}, "OPSWARM_LLM__BASE_URL"),
        ({"model": " "}, "OPSWARM_LLM__MODEL"),
    ],
)
def test_invalid_settings_name_the_setting(fields: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        LlmConfig(**fields)


def test_limits_are_validated() -> None:
    with pytest.raises(ValidationError):
        LlmConfig(timeout_s=0)
    with pytest.raises(ValidationError):
        LlmConfig(max_retries=-1)


def test_disabled_gives_no_client_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="knowledge.llm_client")
    assert build_model_client(LlmConfig()) is None
    assert build_model_client(LlmConfig(base_url="")) is None
    said = [record for record in caplog.records if record.getMessage() == DISABLED_MESSAGE]
    assert len(said) == 1
    assert said[0].levelno == logging.INFO
    assert getattr(said[0], "setting") == "OPSWARM_LLM__BASE_URL"


def test_known_openai_model_uses_autogens_info() -> None:
    assert model_info_for(LlmConfig(base_url="http://127.0.0.1:1/v1", model="gpt-4o-mini")) is None
    assert model_info_for(LlmConfig(base_url="http://127.0.0.1:1/v1", model="gpt-4o-2024-08-06")) is None


def test_known_model_with_an_override() -> None:
    info = model_info_for(LlmConfig(model="gpt-4o-mini", structured_output=False))
    assert info is not None
    assert (info["structured_output"], info["function_calling"], info["json_output"]) == (False, True, True)
    assert info["family"] == "gpt-4o"
    info = model_info_for(LlmConfig(model="gpt-4o-mini", family="custom", vision=False))
    assert info is not None and (info["family"], info["vision"]) == ("custom", False)


def test_unknown_model_takes_the_given_capabilities() -> None:
    info = model_info_for(LlmConfig(model="llama3.1:8b", function_calling=True, structured_output=True))
    assert info == {
        "vision": False, "function_calling": True, "json_output": True, "family": "unknown", "structured_output": True,
    }  # fmt: skip
    info = model_info_for(
        LlmConfig(model="llama3.1:8b", function_calling=False, structured_output=False, json_output=True, family="llama")
    )
    assert info is not None
    assert (info["function_calling"], info["structured_output"], info["json_output"], info["family"]) == (
        False, False, True, "llama"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({}, "OPSWARM_LLM__FUNCTION_CALLING and OPSWARM_LLM__STRUCTURED_OUTPUT"),
        ({"function_calling": True}, "OPSWARM_LLM__STRUCTURED_OUTPUT"),
        ({"structured_output": True}, "OPSWARM_LLM__FUNCTION_CALLING"),
    ],
)
def test_unknown_model_without_capabilities_is_a_config_error(fields: dict[str, bool], named: str) -> None:
    config = LlmConfig(base_url="http://127.0.0.1:1/v1", model="mistral-small", **fields)
    with pytest.raises(LlmConfigError, match=named):
        build_model_client(config)


async def test_enabled_builds_autogens_openai_client() -> None:
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    config = LlmConfig(
        base_url="http://127.0.0.1:1/v1", model="stub-llm", api_key="sk-x", function_calling=True,
        structured_output=False, timeout_s=3, temperature=0.2, max_tokens_per_reply=99,
    )  # fmt: skip
    client = build_model_client(config)
    try:
        assert isinstance(client, OpenAIChatCompletionClient)
        assert client.model_info["function_calling"] is True and client.model_info["structured_output"] is False
        openai_client = client._client
        assert (str(openai_client.base_url), openai_client.timeout, openai_client.max_retries) == (
            "http://127.0.0.1:1/v1/", 3, 0
        )  # fmt: skip
        assert openai_client.api_key == "sk-x"
        assert client._create_args == {"model": "stub-llm", "temperature": 0.2, "max_tokens": 99, "timeout": 3}
    finally:
        await client.close()


async def test_without_api_key_sends_a_placeholder() -> None:
    client = build_model_client(LlmConfig(base_url="http://127.0.0.1:1/v1"))
    try:
        assert client is not None and client._client.api_key == "none"  # type: ignore[attr-defined]
    finally:
        assert client is not None
        await client.close()


def test_usage_of() -> None:
    result = CreateResult(
        finish_reason="stop", content="ok", usage=RequestUsage(prompt_tokens=12, completion_tokens=3), cached=False
    )
    assert usage_of(result) == (12, 3)
    result = CreateResult(
        finish_reason="stop", content="ok", usage=RequestUsage(prompt_tokens=0, completion_tokens=0), cached=False
    )
    assert usage_of(result) == (0, 0)
