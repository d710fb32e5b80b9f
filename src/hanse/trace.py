"""What one request reports once it is answered: its log line, its response headers, its span."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hanse.domain import Usage


@dataclass(slots=True)
class Trace:
    """Filled in as the request goes through the pipeline; read by the HTTP edge at its end."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    account: str | None = None
    key_id: str | None = None
    model: str | None = None  # as the client named it
    catalog_model: str | None = None  # the catalog's id it resolved to
    route: str | None = None
    attempts: int = 0
    provider_s: float = 0.0  # spent waiting on providers (until the first event, for a stream)
    account_id: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # on every answer, errors too (limits)
    usage: Usage | None = None  # as metered, once the answer (or its stream) is settled
    finish_reasons: list[str] = field(default_factory=list)  # one a choice, as they end
    error: str | None = None  # the catalog code of the error that answered, if one did
