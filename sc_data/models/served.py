"""Chat completions from an OpenAI-compatible server: vLLM, SGLang, TGI, llama.cpp's server, `transformers serve`, OpenAI.

The HTTP and the retries are the maintained ``openai`` client's (429, 408, 409, 5xx, timeouts
and dropped connections retried ``max_retries`` times with exponential backoff, ``Retry-After``
honoured), so a server that restarts mid-run only delays it. What sc-data adds on top:

* bounded concurrency: at most ``max_concurrency`` requests in flight;
* a reply cache on disk, one JSON file per request, keyed by sha256 of the endpoint and the whole
  request body (model, messages, sampling parameters, seed): a re-run, a resume or another rank
  asks nothing twice, and any change to the request asks again;
* the API key read from an environment variable when the client opens, sent only in the
  ``Authorization`` header, and never written to the cache, a manifest or a log.

Requests go out as plain JSON bodies, so server-specific sampling keys (``top_k``, ``seed``) pass
through unchanged; replies come back as the server's JSON, unparsed.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sc_data.errors import ConfigError
from sc_data.io import cache_dir, write_json


class EndpointOptions(BaseModel):
    """How to reach an OpenAI-compatible endpoint; mixed into every options model that can use one."""

    base_url: str | None = Field(None, description="openai: endpoint root, e.g. http://localhost:8000/v1.")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the API key.")
    timeout_s: float = Field(60.0, gt=0, description="openai: seconds per request.")
    max_retries: int = Field(3, ge=0, description="openai: retries on 429/5xx/timeouts/lost connections (backoff by the openai client).")
    max_concurrency: int = Field(8, ge=1, description="openai: requests in flight at once.")
    cache_dir: str | None = Field(None, description="openai: reply cache; default $SC_DATA_CACHE/served (~/.cache/sc-data/served).")


class EndpointError(Exception):
    """A request that failed for good: its retries are spent, or the server refused it.

    Attributes:
        status: the HTTP status of the last reply (None for timeouts and connection errors).
        body: the start of the last reply's body ("" when there was none).
    """

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status, self.body = status, body


class ChatEndpoint:
    """``POST {base_url}/chat/completions`` for one model, cached and with bounded concurrency.

    Args:
        options: where the endpoint is and how to call it.
        model: the served model's name, sent as ``model`` in every request.
    """

    def __init__(self, options: EndpointOptions, *, model: str) -> None:
        if options.base_url is None:
            raise ConfigError("an OpenAI-compatible endpoint needs base_url, e.g. http://localhost:8000/v1")
        self.base_url = options.base_url.rstrip("/")
        self.model = model
        self.options = options
        self.cache_root = Path(options.cache_dir).expanduser() if options.cache_dir else cache_dir("served")
        self._client: Any = None

    def describe(self) -> dict[str, Any]:
        """What a manifest records about the endpoint (never the key, only the variable's name)."""
        return {"base_url": self.base_url, "model": self.model, "api_key_env": self.options.api_key_env}

    def open(self) -> None:
        import openai

        key = os.environ.get(self.options.api_key_env) or "not-needed"  # local servers take any key
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.options.timeout_s,
                                     max_retries=self.options.max_retries)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _cache_file(self, body: dict[str, Any]) -> Path:
        key = json.dumps([self.base_url, body], sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.cache_root / digest[:2] / f"{digest}.json"

    def cached(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The stored reply to exactly this request, if any (a damaged entry counts as none)."""
        path = self._cache_file(body)
        try:
            reply = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return reply if isinstance(reply, dict) else None

    def store(self, body: dict[str, Any], reply: dict[str, Any]) -> None:
        write_json(reply, self._cache_file(body))

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send ``body`` (with ``model`` added) and return the reply's JSON; no cache.

        Raises:
            EndpointError: the retries are spent, the server refused the request, or the reply is not JSON.
        """
        import openai

        if self._client is None:
            self.open()
        try:
            text = self._client.post("/chat/completions", cast_to=str, body={"model": self.model, **body})
        except openai.APIStatusError as e:
            raise EndpointError(f"HTTP {e.status_code}: {e.response.text[:200]}", status=e.status_code, body=e.response.text[:2000]) from e
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            raise EndpointError(f"{type(e).__name__}: {e}") from e
        try:
            reply = json.loads(text)
        except ValueError as e:
            raise EndpointError(f"reply is not JSON ({e}): {text[:200]!r}", status=200, body=text[:2000]) from e
        if not isinstance(reply, dict):
            raise EndpointError(f"reply is not a JSON object: {text[:200]!r}", status=200, body=text[:2000])
        return reply

    def complete(self, body: dict[str, Any], *, keep: Callable[[dict[str, Any]], bool] = lambda reply: True) -> dict[str, Any]:
        """The cached reply to ``body``, else a fresh one, stored when ``keep(reply)`` says it is usable."""
        reply = self.cached(body)
        if reply is None:
            reply = self.request(body)
            if keep(reply):
                self.store(body, reply)
        return reply

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(item) for item in items]`` with at most ``max_concurrency`` calls in flight, in order."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.options.max_concurrency) as pool:
            return list(pool.map(fn, items))


def reply_text(reply: dict[str, Any]) -> str:
    """The first choice's message text.

    Raises:
        ValueError: the reply has no choice with a text message.
    """
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"reply has no choices[0].message.content ({type(e).__name__}: {e}): {str(reply)[:200]}") from None
    if not isinstance(content, str):
        raise ValueError(f"message content is {type(content).__name__}, not a string")
    return content
