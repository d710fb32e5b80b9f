"""The routing cases both routing test modules share: the docs' three providers and what each flavor
picks among them (worked out by hand in docs/routing.md)."""

from __future__ import annotations

HELLO = [{"role": "user", "content": "Name three Hanseatic cities."}]
FLAVORS = ("balanced", "speed", "price", "eco", "batch")
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}

# The three providers of docs/routing.md's worked example: cheap but slow on a coal-heavy grid,
# fast and dear, green in between. `cheap` serves at reasoning quality (full-precision weights).
TRIO = {
    "cheap": 'location = "PL"\npue = 1.5\nrenewable_percent = 0\n'
    "prior_ttft_ms = 1500\nprior_tokens_per_s = 20\n",
    "fast": 'location = "DE"\npue = 1.2\nrenewable_percent = 30\n'
    "prior_ttft_ms = 100\nprior_tokens_per_s = 200\n",
    "green": 'location = "SE"\npue = 1.1\nrenewable_percent = 90\n'
    "prior_ttft_ms = 800\nprior_tokens_per_s = 50\n",
}
TRIO_PRICES = {"cheap": ("0.10", "0.20"), "fast": ("1.00", "2.00"), "green": ("0.60", "1.20")}
ORDER = {
    "balanced": ["green", "fast", "cheap"],
    "speed": ["fast", "green", "cheap"],
    "price": ["cheap", "green", "fast"],
    "eco": ["green", "fast", "cheap"],
    "batch": ["cheap", "green", "fast"],
}
# What the formula says for HELLO: each flavor's first choice.
BEST = {flavor: order[0] for flavor, order in ORDER.items()}
