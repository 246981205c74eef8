"""Choose the LLM provider from settings."""

from __future__ import annotations

import httpx

from service.config import Settings
from service.llm.base import LLMProvider
from service.llm.offline import OfflineProvider
from service.llm.openai_compatible import OpenAICompatibleProvider

__all__ = ["build_provider"]


def build_provider(settings: Settings, client: httpx.AsyncClient) -> LLMProvider:
    """OpenAI-compatible when LLM_BASE_URL is set, else the offline provider."""
    if settings.llm_base_url is None:
        return OfflineProvider(model=settings.llm_model or "offline-echo")
    assert settings.llm_model is not None  # Settings requires it with a base URL
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return OpenAICompatibleProvider(
        client=client, base_url=settings.llm_base_url, model=settings.llm_model, api_key=api_key
    )
