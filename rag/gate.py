"""What reaches the server from the network, before any route runs: the Host header, requests a browser sends from
another site, the size of a request body; and what the access log keeps of a request.

- Host: without keys the server is for this machine only, so it answers only to the loopback names (a page on
  another site that re-points its own name at 127.0.0.1, "DNS rebinding", is refused). With keys it answers to any
  host unless RAG_ALLOWED_HOSTS lists them. Starlette's TrustedHostMiddleware does the check.
- Cross-site: a browser sends a form or fetch from any site to 127.0.0.1 without asking first (no CORS preflight for
  a multipart upload), and Gradio's login cookie is SameSite=None; so every request that changes something (any
  method but GET, HEAD and OPTIONS) must come from the server's own origin: its Origin header, when the browser sends
  one, names the Host it was sent to (or a RAG_ALLOWED_HOSTS name, for a reverse proxy), and its Sec-Fetch-Site is not
  cross-site. Programs (curl, the openai client) send neither header. Starlette has no such middleware (its CORS
  middleware only adds response headers; the browser still sends the request).
- Size: JSON bodies up to MAX_BODY_BYTES, multipart uploads up to RAG_UI_MAX_UPLOAD_MB (plus framing), counted as
  they arrive, so a chunked body without Content-Length is cut off too. Neither uvicorn nor Starlette limits a body.
- Access log: the path without its query string (a key sent as ?api_key=..., Gradio's session_hash).
"""

from __future__ import annotations

import logging
import urllib.parse

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse

from rag.access import AccessError, Keys
from rag.settings import Settings

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]  # as Starlette parses a Host header (IPv6 in brackets)
# A chat request with a long conversation (100 turns, each a 4,000-character question and its answer) is under 1 MB;
# the JSON parser holds a body a few times over in memory as str and objects.
MAX_BODY_BYTES = 4 * 2**20
MULTIPART_SLACK_BYTES = 2**20


def error_body(message: str, kind: str, code: str | None = None) -> dict:
    """The OpenAI error shape, one line: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def listed_hosts(settings: Settings) -> list[str]:
    return [h.strip().lower() for h in settings.allowed_hosts.split(",") if h.strip()]


def allowed_hosts(settings: Settings, keys: Keys) -> list[str]:
    """The Host header values the server answers to: see the module docstring."""
    listed = listed_hosts(settings)
    if keys.open:
        if "*" in listed:
            raise AccessError("RAG_ALLOWED_HOSTS='*' needs keys: without them the server answers to this machine only")
        return LOOPBACK_HOSTS + listed
    return listed or ["*"]


def guard(app, settings: Settings, keys: Keys) -> None:
    """Add the checks of this module to a Starlette/FastAPI app (outermost first: Host, then origin and size)."""
    app.add_middleware(
        BodyLimit, json_bytes=MAX_BODY_BYTES, upload_bytes=settings.ui_max_upload_mb * 2**20 + MULTIPART_SLACK_BYTES
    )
    app.add_middleware(SameOrigin, proxied=[h for h in listed_hosts(settings) if h != "*"])
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings, keys), www_redirect=False)
    access_log = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, NoQueryString) for f in access_log.filters):
        access_log.addFilter(NoQueryString())


def cross_site(headers: Headers, proxied: list[str]) -> str | None:
    """Why a state-changing request comes from another site, or None when it does not (or is not from a browser)."""
    origin = headers.get("origin")
    if origin is not None:
        parts = urllib.parse.urlsplit(origin)
        if parts.netloc and parts.netloc.lower() == headers.get("host", "").lower():
            return None
        if parts.hostname and parts.hostname.lower() in proxied:
            return None
        return f"Origin {origin[:100]}"
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site {headers['sec-fetch-site']}"
    return None


class SameOrigin:
    """Refuses, with 403, a request that changes something and that a browser sent from another site."""

    def __init__(self, app, proxied: list[str]):
        self.app, self.proxied = app, proxied

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            reason = cross_site(Headers(scope=scope), self.proxied)
            if reason:
                message = f"cross-site request refused ({reason}): use this server's own pages or send no Origin"
                await JSONResponse(error_body(message, "permission_denied", "cross_site"), 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses, with 413, a request body over its limit: at once when Content-Length says so, else as soon as the
    bytes received pass it (the route sees the body end there, and its response is replaced by the 413)."""

    def __init__(self, app, json_bytes: int, upload_bytes: int):
        self.app, self.json_bytes, self.upload_bytes = app, json_bytes, upload_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        upload = headers.get("content-type", "").startswith("multipart/form-data")
        limit = self.upload_bytes if upload else self.json_bytes
        too_large = JSONResponse(
            error_body(f"the request body is larger than {limit / 2**20:g} MB", "invalid_request_error", "too_large"),
            413,
        )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await too_large(scope, receive, send)
            return
        received, refused, started = 0, False, False

        async def counted_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise BodyTooLarge
            return message

        async def checked_send(message):
            nonlocal started
            if refused:
                return  # the route's own answer to a body cut short; the 413 goes out instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, checked_send)
        except BodyTooLarge:
            pass
        if refused and not started:
            await too_large(scope, receive, send)


class NoQueryString(logging.Filter):
    """uvicorn's access log line ('%s - "%s %s HTTP/%s" %d': client, method, path, version, status) with the path's
    query string dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True
