"""Providers: where models run (the embedded llama.cpp, OpenAI-shaped upstreams)."""
