"""A JSON-over-HTTP POST with timeouts and retries (standard library only).

Retried: HTTP 408, 409, 429 and 5xx, connection errors and timeouts, with exponential
backoff ``min(max_backoff, backoff * 2**attempt)`` times a random factor in [0.5, 1]
(jitter, so that concurrent workers do not retry in lock step), or the server's
``Retry-After`` when it sends one. Other 4xx answers are not retried: the request
itself is wrong, and the error quotes the server's message.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["HTTPRequestError", "post_json"]

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class HTTPRequestError(RuntimeError):
    """A request failed for good (not retryable, or out of retries)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def post_json(
    url: str,
    payload: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    max_retries: int = 5,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """POST ``payload`` as JSON to ``url`` and return the decoded JSON answer."""
    body = json.dumps(payload).encode("utf-8")
    all_headers = {"Content-Type": "application/json", **dict(headers or {})}
    last = ""
    for attempt in range(max_retries + 1):
        retry_after: float | None = None
        try:
            request = urllib.request.Request(url, data=body, headers=all_headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:500]
            if err.code not in RETRY_STATUS:
                raise HTTPRequestError(
                    f"POST {url} failed with HTTP {err.code}: {detail}", err.code
                ) from err
            last = f"HTTP {err.code}: {detail}"
            header = err.headers.get("Retry-After") if err.headers else None
            if header is not None:
                try:
                    retry_after = float(header)
                except ValueError:
                    retry_after = None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        except json.JSONDecodeError as err:
            raise HTTPRequestError(f"POST {url} answered with invalid JSON ({err}).") from err
        if attempt == max_retries:
            break
        delay = retry_after if retry_after is not None else min(max_backoff, backoff * 2**attempt)
        sleep(delay * (1.0 if retry_after is not None else random.uniform(0.5, 1.0)))
    raise HTTPRequestError(
        f"POST {url} failed after {max_retries + 1} attempt(s); last error: {last}. Check that "
        "the server is up (base_url) or raise timeout / max_retries in the model YAML."
    )
