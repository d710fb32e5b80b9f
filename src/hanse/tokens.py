"""Token counts: the model's own tokenizer where the catalog names one, else a conservative estimate.

A model's tokenizer comes from its `tokenizer` setting: `gguf:<path>` (the vocabulary of a GGUF file,
read by llama.cpp), `tokenizers:<path>` (a tokenizer.json, read by the `tokenizers` package) or
`tiktoken:<encoding>` (an encoding whose file is already in tiktoken's cache). Without one, a model
served by the embedded engine counts with its GGUF, any other is estimated. Nothing is ever
downloaded. Every input that reaches the provider is counted: message contents, names, tool calls
and tool results in the history, tool definitions, the response_format schema, and the chat
template's cost per message.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # the catalog's schema checks `tokenizer` settings with this module
    from hanse.config.schema import Catalog, ModelConfig
    from hanse.domain import Completion, InferenceRequest

_CHARS_PER_TOKEN = 4  # ASCII: what BPE tokenizers average on English prose
_PER_MESSAGE = 4  # the chat template's role and separators
_PER_NAME = 1
_REPLY = 3  # the template's opening of the answer
# A floor no realistic tokenizer goes under: a token covers at most 16 bytes of text.
_MAX_BYTES_PER_TOKEN = 16
_IMAGE_BASE = 85
_IMAGE_TILE = 170
# Audio at 10 tokens a second: mp3 at 16 kB a second, wav at 32 kB (see estimate_attachment_tokens).
_AUDIO_BYTES_PER_TOKEN = {"mp3": 1600, "wav": 3200}
_FILE_BYTES_PER_TOKEN = 32
_TIKTOKEN_BLOBS = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"

CountSource = Literal["counted", "estimated"]


def estimate_text_tokens(text: str) -> int:
    """ASCII at four characters a token (the usual rule for English), other characters at two
    tokens per three UTF-8 bytes, which rarely falls short: a CJK character is two tokens (the
    embedded vocabulary spends about two, OpenAI's one or two), an umlaut one or two."""
    ascii_chars = sum(1 for char in text if char < "\x80")
    other_bytes = len(text.encode("utf-8")) - ascii_chars
    return -(-ascii_chars // _CHARS_PER_TOKEN) + -(-other_bytes * 2 // 3)


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """An estimate of a conversation's prompt tokens, counting the chat template's per-message cost
    and any audio and file parts."""
    text = sum(_PER_MESSAGE + estimate_text_tokens(message_text(m)) for m in messages)
    return text + estimate_attachment_tokens(messages)


def message_text(message: dict[str, Any]) -> str:
    """The text of a message: its content (string or text parts) and any tool calls."""
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(p.get("text") or p.get("refusal") or "" for p in content)
    else:
        text = ""
    for call in message.get("tool_calls") or []:
        name, arguments = _call_texts(call)
        text += name + arguments
    return text


def _call_texts(call: dict[str, Any]) -> tuple[str, str]:
    """A replayed call's name and arguments: a function's JSON, or a custom tool's `input`."""
    custom = call.get("type") == "custom"
    fields = call.get("custom" if custom else "function") or {}
    return str(fields.get("name") or ""), str(fields.get("input" if custom else "arguments") or "")


def estimate_attachment_tokens(messages: list[dict[str, Any]]) -> int:
    """An estimate of the prompt tokens of audio and file parts, from their size (base64 is 4
    characters per 3 bytes): audio at 10 tokens a second (OpenAI's rate), its seconds taken as
    16 kB a second for mp3 (128 kbit/s) and 32 kB for wav (16 kHz, 16-bit mono); a file at a
    token per 32 bytes (a PDF page of ~100 kB: its text and page image, ~3,000 tokens). A file
    sent by `file_id` has no size here and counts nothing. Never part of a count's floor."""
    total = 0
    for message in messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "input_audio":
                audio = part.get("input_audio") or {}
                size = _decoded_size(audio.get("data"))
                per_token = _AUDIO_BYTES_PER_TOKEN.get(str(audio.get("format")), 1600)
                total += -(-size // per_token)
            elif part.get("type") == "file":
                size = _decoded_size((part.get("file") or {}).get("file_data"))
                total += -(-size // _FILE_BYTES_PER_TOKEN)
    return total


def _decoded_size(data: Any) -> int:
    """The bytes a base64 string (a data URL's payload, or bare) decodes to, without decoding it."""
    text = str(data or "")
    return len(text.rpartition(",")[2].rstrip("=")) * 3 // 4


def estimate_image_tokens(width: int, height: int, detail: str | None) -> int:
    """OpenAI's published count for an image: 85 at low detail; otherwise 85 + 170 per 512-pixel
    tile, after fitting the image in 2048 x 2048 and its short side in 768 pixels."""
    if detail == "low":
        return _IMAGE_BASE
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        w, h = w * 2048 / max(w, h), h * 2048 / max(w, h)
    if min(w, h) > 768:
        w, h = w * 768 / min(w, h), h * 768 / min(w, h)
    return _IMAGE_BASE + _IMAGE_TILE * math.ceil(w / 512) * math.ceil(h / 512)


class Tokenizer(Protocol):
    """Counts the tokens of a text; `exact` when it is the model's own vocabulary."""

    exact: bool

    def count(self, text: str) -> int: ...

    def count_chat(self, messages: list[dict[str, Any]]) -> int | None:
        """`messages` laid out by the model's chat template, where the tokenizer knows it."""
        ...


class TokenCount(int):
    """A prompt's token count. An int, so every step that takes a count takes it unchanged; it also
    says whether a tokenizer counted it, whether it is the provider's own exact count (chat template
    included), and a floor the real count surely reaches (the context check refuses on that)."""

    lower: int
    source: CountSource
    exact: bool

    def __new__(cls, tokens: int, lower: int, source: CountSource, exact: bool) -> TokenCount:
        count = super().__new__(cls, tokens)
        count.lower, count.source, count.exact = min(lower, tokens), source, exact
        return count


def lower_bound(tokens: int) -> int:
    """The floor of a count: a `TokenCount`'s, or the plain number itself."""
    return tokens.lower if isinstance(tokens, TokenCount) else tokens


def exact_count(tokens: int) -> TokenCount:
    """A provider's own count of the prompt, its chat template applied."""
    return TokenCount(tokens, tokens, "counted", exact=True)


def prompt_texts(request: InferenceRequest) -> Iterator[str]:
    """Every piece of text the provider receives: contents, names, tool calls and results in the
    history, tool definitions, the response_format schema."""
    for message in request.messages:
        yield from _message_texts(message)
    for tool in request.tools:
        yield json.dumps(tool.get(tool.get("type", "function"), tool), ensure_ascii=False)
    fmt = request.response_format
    if fmt is not None and fmt.schema is not None:
        yield (fmt.name or "") + json.dumps(fmt.schema, ensure_ascii=False)


def count_prompt(tokenizer: Tokenizer, request: InferenceRequest) -> TokenCount:
    """The request's prompt tokens with `tokenizer`, the template's overhead, the images, and the
    estimate of audio and file parts (outside the floor: a guess from size never refuses).
    A GGUF with a chat template counts the messages as the template lays them out (its own
    default system prompt included); otherwise a fixed overhead per message is added."""
    texts = list(prompt_texts(request))
    content = sum(tokenizer.count(text) for text in texts)
    names = sum(1 for m in request.messages if m.get("name"))
    overhead = _PER_MESSAGE * len(request.messages) + _PER_NAME * names + _REPLY
    templated = tokenizer.count_chat(request.messages)
    if templated is not None:
        message_content = sum(
            tokenizer.count(t) for m in request.messages for t in _message_texts(m)
        )
        overhead = max(0, templated - message_content)
    floor = content if tokenizer.exact else sum(_floor(text) for text in texts)
    attachments = estimate_attachment_tokens(request.messages)
    return TokenCount(
        content + overhead + request.image_tokens + attachments,
        floor + request.image_tokens,
        "counted" if tokenizer.exact else "estimated",
        exact=False,
    )


def completion_texts(completion: Completion) -> list[str]:
    """What an answer delivered: every choice's content and tool calls (names and arguments)."""
    texts: list[str] = []
    for choice in completion.choices:
        texts.append(choice.content or "")
        texts += [call.name + call.arguments for call in choice.tool_calls]
        transcript = (choice.audio or {}).get("transcript")
        texts.append(transcript if isinstance(transcript, str) else "")
    return texts


def count_texts(tokenizer: Tokenizer, texts: Iterable[str]) -> int:
    return sum(tokenizer.count(text) for text in texts if text)


def tokenizer_for(catalog: Catalog, model: ModelConfig) -> Tokenizer:
    """The model's tokenizer: its `tokenizer` setting, else the GGUF of the embedded engine that
    serves it, else the estimate."""
    if model.tokenizer is not None:
        return load(model.tokenizer)
    for route in model.routes:
        provider = catalog.provider(route.provider)
        if provider.kind == "local":
            return load("gguf:" + (provider.model_path or _embedded_gguf()))
    return ESTIMATE


def check_spec(spec: str) -> str:
    """A `tokenizer` setting that can be loaded offline, or ValueError saying why not."""
    kind, _, where = spec.partition(":")
    if kind in ("gguf", "tokenizers"):
        if not Path(where).is_file():
            raise ValueError(f"tokenizer file {where!r} does not exist")
        if kind == "tokenizers" and importlib.util.find_spec("tokenizers") is None:
            raise ValueError("a tokenizers: tokenizer needs the `tokenizers` package")
        return spec
    if kind == "tiktoken":
        if importlib.util.find_spec("tiktoken") is None:
            raise ValueError("a tiktoken: tokenizer needs the `tiktoken` package")
        if not _tiktoken_file(where).is_file():
            raise ValueError(f"tiktoken's file for {where!r} is not in its local cache")
        return spec
    raise ValueError("a tokenizer is gguf:<path>, tokenizers:<path> or tiktoken:<encoding>")


@functools.cache
def load(spec: str) -> Tokenizer:
    """A tokenizer, loaded once per process (a vocabulary takes a fraction of a second)."""
    kind, _, where = spec.partition(":")
    if kind == "gguf":
        return _Gguf(where)
    if kind == "tokenizers":
        return _Tokenizers(where)
    return _Tiktoken(where)


class _Estimate:
    exact = False

    def count(self, text: str) -> int:
        return estimate_text_tokens(text)

    def count_chat(self, messages: list[dict[str, Any]]) -> int | None:
        return None  # no chat template: the caller adds a fixed overhead per message


ESTIMATE: Tokenizer = _Estimate()


class _Gguf:
    """The vocabulary of a GGUF file, without its weights."""

    exact = True

    def __init__(self, path: str) -> None:
        llama_cpp = importlib.import_module("llama_cpp")
        chat_format = importlib.import_module("llama_cpp.llama_chat_format")
        self._llama = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        template = self._llama.metadata.get("tokenizer.chat_template")
        self._formatter = None
        if template:
            eos, bos = (
                self._llama.detokenize([token], special=True).decode("utf-8", "replace")
                for token in (self._llama.token_eos(), self._llama.token_bos())
            )
            self._formatter = chat_format.Jinja2ChatFormatter(
                template=template, eos_token=eos, bos_token=bos
            )

    def count(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_chat(self, messages: list[dict[str, Any]]) -> int | None:
        """The tokens of `messages` laid out by the GGUF's chat template, the answer's opening
        included; None without a template, or when the template cannot take these messages."""
        if self._formatter is None:
            return None
        plain = [
            {"role": m.get("role", "user"), "content": "".join(_message_texts(m))} for m in messages
        ]
        try:
            prompt = self._formatter(messages=plain).prompt
        except Exception:  # a template may raise on roles it does not know: count without it
            return None
        return len(self._llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))


class _Tokenizers:
    exact = True

    def __init__(self, path: str) -> None:
        self._tokenizer = importlib.import_module("tokenizers").Tokenizer.from_file(path)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_chat(self, messages: list[dict[str, Any]]) -> int | None:
        return None  # no chat template: the caller adds a fixed overhead per message


class _Tiktoken:
    exact = True

    def __init__(self, encoding: str) -> None:
        self._encoding = importlib.import_module("tiktoken").get_encoding(encoding)

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def count_chat(self, messages: list[dict[str, Any]]) -> int | None:
        return None  # no chat template: the caller adds a fixed overhead per message


def _message_texts(message: dict[str, Any]) -> Iterator[str]:
    content = message.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        yield from (_part_text(p) for p in content)
    for field in ("name", "tool_call_id"):
        if isinstance(message.get(field), str):
            yield message[field]
    for call in message.get("tool_calls") or []:
        name, arguments = _call_texts(call)
        yield str(call.get("id") or "") + name
        yield arguments


def _part_text(part: dict[str, Any]) -> str:
    """A content part's text: a text or refusal, a file's name (its data is estimated by size)."""
    if part.get("type") == "file":
        return str((part.get("file") or {}).get("filename") or "")
    return str(part.get("text") or part.get("refusal") or "")


def _floor(text: str) -> int:
    return -(-len(text.encode("utf-8")) // _MAX_BYTES_PER_TOKEN)


def _tiktoken_file(encoding: str) -> Path:
    """Where tiktoken keeps an encoding it has downloaded (tiktoken.load.read_file_cached)."""
    folder = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    cache = Path(folder) if folder else Path(tempfile.gettempdir()) / "data-gym-cache"
    return cache / hashlib.sha1(_TIKTOKEN_BLOBS.format(encoding).encode()).hexdigest()


def _embedded_gguf() -> str:
    # Imported here: the providers package imports this module.
    from hanse.providers.local import embedded_model_path

    return embedded_model_path()
