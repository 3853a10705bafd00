"""tunesmith: from a generic LLM to a specialised model that measurably beats it."""

__version__ = "0.1.0"
