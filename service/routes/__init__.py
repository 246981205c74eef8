"""One APIRouter per resource."""

from service.routes import chat, health, runs

__all__ = ["chat", "health", "runs"]
