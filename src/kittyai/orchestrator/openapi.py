"""The orchestrator's OpenAPI 3.1 document, built from its route table and its models.

The API describes each route once, as an `Operation`: the handler, the scope it
needs, its body, query and replies. The same table adds the routes to the app and
writes `/openapi.json`, so the document cannot drift from what is served. Routes
other modules added (the scaffold's `/health`, the workers' routes) are listed too,
with what aiohttp knows about them: their method, path and docstring.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
import inspect
import re
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from kittyai import __version__
from kittyai.orchestrator.sse import EVENT_STREAM

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "bearer"
JSON = "application/json"
_SCHEMA_REF = "#/components/schemas/{model}"
_PATH_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ErrorDetail(BaseModel):
    """What went wrong, for programs (`code`) and for humans (`message`)."""

    model_config = ConfigDict(title="ErrorDetail")

    code: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(title="ErrorBody")

    error: ErrorDetail
    # The request's `X-Request-ID`: the log lines of this request carry it.
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One successful answer of an operation."""

    status: HTTPStatus
    description: str
    model: type[BaseModel] | None = None
    media_type: str = JSON
    # Headers the answer carries, by name, with their description.
    headers: Mapping[str, str] = field(default_factory=dict)


# Each (model, mode) the document names, and the `$ref` that points to its schema.
type _Refs = Mapping[tuple[Any, JsonSchemaMode], dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One route of the API, as it is served and as it is documented.

    The handler's docstring is the operation's summary (first line) and description;
    the scope and the rate limit are checked before the handler runs.
    """

    method: str
    path: str
    handler: Handler
    # None: any valid token.
    scope: str | None
    replies: Sequence[Reply]
    body: type[BaseModel] | None = None
    # An empty body means the model's defaults.
    body_optional: bool = False
    query: type[BaseModel] | None = None
    # Documented request headers, by name, with their description.
    request_headers: Mapping[str, str] = field(default_factory=dict)
    # Error statuses beyond the ones every route, body, query or scope may answer.
    errors: Sequence[HTTPStatus] = ()
    rate_limited: bool = False


def build_openapi(
    app: web.Application,
    operations: Sequence[Operation],
    *,
    title: str,
    public_paths: Iterable[str] = (),
) -> dict[str, Any]:
    """Return the OpenAPI document of every route `app` serves."""
    refs, schemas = _component_schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation, refs)
    public = frozenset(public_paths)
    for method, path, handler in _served_routes(app):
        if method.lower() not in paths.get(path, {}):
            paths.setdefault(path, {})[method.lower()] = _other_route(
                method, path, handler, refs, public=path in public
            )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": __version__},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "The service's API token (every scope), or a scoped token from the"
                        " options; each operation lists the scope it needs."
                    ),
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


def _component_schemas(operations: Sequence[Operation]) -> tuple[_Refs, dict[str, Any]]:
    """Return each model's `$ref` and the schemas they point to."""
    models: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (ErrorBody, "serialization"): None
    }
    for operation in operations:
        if operation.body is not None:
            models[(operation.body, "validation")] = None
        for reply in operation.replies:
            if reply.model is not None:
                models[(reply.model, "serialization")] = None
    refs, document = models_json_schema(list(models), ref_template=_SCHEMA_REF)
    return refs, dict(sorted(document.get("$defs", {}).items()))


def _operation(operation: Operation, refs: _Refs) -> dict[str, Any]:
    parameters = _path_parameters(operation.path)
    if operation.query is not None:
        parameters.extend(_query_parameters(operation.query))
    parameters.extend(
        {"name": name, "in": "header", "description": description, "schema": {"type": "string"}}
        for name, description in operation.request_headers.items()
    )
    responses: dict[str, Any] = {}
    for reply in operation.replies:
        answer: dict[str, Any] = {"description": reply.description}
        if reply.media_type == EVENT_STREAM:
            # OpenAPI 3.1 cannot describe the items of a stream (3.2's `itemSchema`
            # can): the extension names the schema of each event's `data`.
            answer["content"] = {EVENT_STREAM: {"schema": {"type": "string"}}}
            if reply.model is not None:
                answer["content"][EVENT_STREAM]["x-item-schema"] = refs[
                    (reply.model, "serialization")
                ]
        elif reply.model is not None:
            answer["content"] = {reply.media_type: {"schema": refs[(reply.model, "serialization")]}}
        elif reply.media_type != JSON:
            answer["content"] = {reply.media_type: {"schema": {"type": "string"}}}
        if reply.headers:
            answer["headers"] = {
                name: {"description": description, "schema": {"type": "string"}}
                for name, description in reply.headers.items()
            }
        responses[str(reply.status.value)] = answer
    for status in _error_statuses(operation):
        responses[str(status.value)] = _error_reply(status, refs)
    summary, _, description = _docstring(operation.handler).partition("\n")
    document: dict[str, Any] = {
        "operationId": operation.handler.__name__,
        "summary": summary,
        # OpenAPI 3.1 lets a bearer scheme list the roles it needs: here, the scope.
        "security": [{SECURITY_SCHEME: [operation.scope] if operation.scope else []}],
        "responses": responses,
    }
    if description.strip():
        document["description"] = description.strip()
    if parameters:
        document["parameters"] = parameters
    if operation.body is not None:
        document["requestBody"] = {
            "required": not operation.body_optional,
            "content": {JSON: {"schema": refs[(operation.body, "validation")]}},
        }
    return document


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAMETER.findall(path)
    ]


def _query_parameters(query: type[BaseModel]) -> list[dict[str, Any]]:
    schema = query.model_json_schema(ref_template=_SCHEMA_REF)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {key: value for key, value in prop.items() if key != "description"},
        }
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _error_statuses(operation: Operation) -> list[HTTPStatus]:
    statuses = {HTTPStatus.UNAUTHORIZED, *operation.errors}
    if operation.scope is not None:
        statuses.add(HTTPStatus.FORBIDDEN)
    if operation.body is not None:
        statuses |= {HTTPStatus.BAD_REQUEST, HTTPStatus.UNPROCESSABLE_CONTENT}
    if operation.query is not None:
        statuses.add(HTTPStatus.UNPROCESSABLE_CONTENT)
    if operation.rate_limited:
        statuses.add(HTTPStatus.TOO_MANY_REQUESTS)
    return sorted(statuses)


def _error_reply(status: HTTPStatus, refs: _Refs) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "description": status.phrase,
        "content": {JSON: {"schema": refs[(ErrorBody, "serialization")]}},
    }
    if status is HTTPStatus.TOO_MANY_REQUESTS:
        reply["headers"] = {
            hdrs.RETRY_AFTER: {
                "description": "Seconds until this token may write again.",
                "schema": {"type": "integer"},
            }
        }
    return reply


def _served_routes(app: web.Application) -> list[tuple[str, str, Handler]]:
    routes = []
    for route in app.router.routes():
        # aiohttp adds HEAD beside every GET on its own.
        if route.method == hdrs.METH_HEAD or route.resource is None:
            continue
        routes.append((route.method, route.resource.canonical, route.handler))
    return routes


def _other_route(
    method: str, path: str, handler: Handler, refs: _Refs, *, public: bool
) -> dict[str, Any]:
    """Describe a route added outside the table: no more than aiohttp knows."""
    summary, _, description = _docstring(handler).partition("\n")
    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{slug}",
        "summary": summary or path,
        "responses": {"200": {"description": "OK"}},
    }
    if description.strip():
        operation["description"] = description.strip()
    if public:
        operation["security"] = []
    else:
        operation["responses"]["401"] = _error_reply(HTTPStatus.UNAUTHORIZED, refs)
    if parameters := _path_parameters(path):
        operation["parameters"] = parameters
    return operation


def _docstring(handler: Handler) -> str:
    return inspect.getdoc(handler) or ""
