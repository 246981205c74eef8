"""LLM providers behind one interface, chosen from settings."""

from service.llm.base import ChatMessage, ChunkSink, Completion, LLMError, LLMProvider, Role
from service.llm.factory import build_provider
from service.llm.offline import OfflineProvider
from service.llm.openai_compatible import OpenAICompatibleProvider

__all__ = [
    "ChatMessage",
    "ChunkSink",
    "Completion",
    "LLMError",
    "LLMProvider",
    "OfflineProvider",
    "OpenAICompatibleProvider",
    "Role",
    "build_provider",
]
