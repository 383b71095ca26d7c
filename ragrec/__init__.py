"""ragrec: RAG-enhanced LLM recommendation with a GCN retriever and multi-head early exit."""

from ragrec.errors import ConfigError, DataError, ModelError, RagrecError

__all__ = ["ConfigError", "DataError", "ModelError", "RagrecError"]
__version__ = "0.1.0"
