"""The OpenAI/Melious wire format: request parsing, response shapes, SSE framing."""
