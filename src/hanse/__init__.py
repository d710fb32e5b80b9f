"""Hanse: a self-hosted, OpenAI-compatible LLM gateway implementing the Melious chat API."""

__version__ = "0.1.0"
