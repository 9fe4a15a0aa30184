"""The HTTP scaffold every service serves its API on.

It adds to an aiohttp application what each service would otherwise repeat:
a correlation id per request (`X-Request-ID`), one access log line and metrics
per request, bearer-token auth, JSON bodies for every error, and `/metrics`.
"""

from collections.abc import Collection, Mapping
import hmac
from http import HTTPStatus
import logging
import re
import time
import uuid

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from pydantic import BaseModel, ValidationError

from kittyai.logs import CORRELATION_ID
from kittyai.validation import describe_errors

_LOGGER = logging.getLogger(__name__)
_ACCESS_LOGGER = logging.getLogger(f"{__name__}.access")

REQUEST_ID_HEADER = "X-Request-ID"
METRICS_PATH = "/metrics"
# Incoming ids end up in logs and headers: keep them short and harmless.
_REQUEST_ID_MAX_LENGTH = 64
_REQUEST_ID_FORBIDDEN = re.compile(r"[^A-Za-z0-9._-]")
# Requests that match no route share one label, so scanners cannot blow up the metrics.
_UNMATCHED_ROUTE = "unmatched"

_CORRELATION_ID_KEY = web.RequestKey("kitty_correlation_id", str)
# The scopes of the token a request came with; the service's own token has ALL_SCOPES.
SCOPES_KEY = web.RequestKey("kitty_scopes", frozenset[str])
TOKEN_NAME_KEY = web.RequestKey("kitty_token_name", str)
ALL_SCOPES = "*"
API_TOKEN_NAME = "api_token"  # noqa: S105 - the name of a token, not a token


class ApiError(Exception):
    """An error a handler raises to answer with a JSON error body."""

    def __init__(
        self,
        status: HTTPStatus,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer `status` with `{"error": {"code": code, "message": message}}`."""
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Return KITTY's JSON error body for the request being served."""
    return web.json_response(
        {"error": {"code": code, "message": message}, "correlation_id": CORRELATION_ID.get()},
        status=status,
        headers=headers,
    )


async def read_model[ModelT: BaseModel](request: web.Request, model: type[ModelT]) -> ModelT:
    """Parse the request's JSON body as `model`; answer 400/422 JSON errors if it is not."""
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as err:
        if any(error["type"] == "json_invalid" for error in err.errors()):
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "invalid_json", "The request body is not valid JSON"
            ) from None
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_CONTENT, "invalid_request", describe_errors(err)
        ) from None


def require_scope(request: web.Request, scope: str) -> None:
    """Answer 403 unless the request's token carries `scope`."""
    scopes = request.get(SCOPES_KEY, frozenset())
    if ALL_SCOPES not in scopes and scope not in scopes:
        raise ApiError(
            HTTPStatus.FORBIDDEN, "missing_scope", f"This token lacks the scope {scope!r}"
        )


def create_app(
    *,
    api_token: str,
    registry: CollectorRegistry,
    public_paths: Collection[str],
    scoped_tokens: Mapping[str, tuple[str, frozenset[str]]] | None = None,
) -> web.Application:
    """Return an application with KITTY's middlewares and `/metrics`.

    Every route needs `Authorization: Bearer <token>` except `public_paths`: the
    `api_token`, which may do everything, or one of `scoped_tokens` (token →
    (name, scopes)), whose scopes handlers check with `require_scope`.
    """
    app = web.Application(
        middlewares=[
            _observe_middleware(_HttpMetrics(registry)),
            _json_errors_middleware,
            _bearer_auth_middleware(
                {api_token: (API_TOKEN_NAME, frozenset({ALL_SCOPES})), **(scoped_tokens or {})},
                frozenset(public_paths),
            ),
        ]
    )
    app.on_response_prepare.append(_add_request_id_header)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST}
        )

    app.router.add_get(METRICS_PATH, metrics)
    return app


class _HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter(
            "kitty_http_requests", "HTTP requests served.", labels, registry=registry
        )
        self.duration = Histogram(
            "kitty_http_request_duration_seconds",
            "Time to produce an HTTP response.",
            labels,
            registry=registry,
        )


def _observe_middleware(metrics: _HttpMetrics) -> Middleware:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        correlation_id = _correlation_id(request)
        request[_CORRELATION_ID_KEY] = correlation_id
        context = CORRELATION_ID.set(correlation_id)
        started = time.perf_counter()
        try:
            response = await handler(request)
            elapsed = time.perf_counter() - started
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else _UNMATCHED_ROUTE
            labels = (request.method, route, str(response.status))
            metrics.requests.labels(*labels).inc()
            metrics.duration.labels(*labels).observe(elapsed)
            _ACCESS_LOGGER.info(
                "%s %s %s %.1f ms",
                request.method,
                request.path,
                response.status,
                elapsed * 1000,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
            return response
        finally:
            CORRELATION_ID.reset(context)

    return observe


@web.middleware
async def _json_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err.status, err.code, err.message, headers=err.headers)
    except web.HTTPException as err:
        if err.status < HTTPStatus.BAD_REQUEST:
            raise
        # Keep headers such as Allow (405); the body and its type are ours.
        headers = {
            name: value
            for name, value in err.headers.items()
            if name not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH)
        }
        return error_response(err.status, _error_code(err.status), err.reason, headers=headers)
    except Exception:
        _LOGGER.exception("Unhandled error while serving %s %s", request.method, request.path)
        return error_response(
            HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "Internal server error"
        )


def _bearer_auth_middleware(
    tokens: Mapping[str, tuple[str, frozenset[str]]], public_paths: frozenset[str]
) -> Middleware:
    expected = [(token.encode(), grant) for token, grant in tokens.items()]

    def grant_of(given: bytes) -> tuple[str, frozenset[str]] | None:
        found = None
        # Constant time and every token compared, so timing reveals neither a
        # partial match nor which token matched.
        for token, grant in expected:
            if hmac.compare_digest(given, token):
                found = grant
        return found

    @web.middleware
    async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public_paths:
            return await handler(request)
        scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        grant = grant_of(given.encode()) if scheme.lower() == "bearer" else None
        if grant is None:
            return error_response(
                HTTPStatus.UNAUTHORIZED,
                "unauthorized",
                "A valid 'Authorization: Bearer <api token>' header is required",
                headers={hdrs.WWW_AUTHENTICATE: "Bearer"},
            )
        request[TOKEN_NAME_KEY], request[SCOPES_KEY] = grant
        return await handler(request)

    return bearer_auth


async def _add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    # A signal, not the middleware, so streamed responses carry the header too.
    if (correlation_id := request.get(_CORRELATION_ID_KEY)) is not None:
        response.headers[REQUEST_ID_HEADER] = correlation_id


def _correlation_id(request: web.Request) -> str:
    incoming = _REQUEST_ID_FORBIDDEN.sub("", request.headers.get(REQUEST_ID_HEADER, ""))
    return incoming[:_REQUEST_ID_MAX_LENGTH] or uuid.uuid4().hex


def _error_code(status: int) -> str:
    """Return e.g. `not_found` for 404."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "http_error"
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")
