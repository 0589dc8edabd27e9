"""The one place where modelq errors become HTTP answers, and where the OpenAPI schema says so.

Every error answer has one body, :class:`~modelq.api.schemas.ErrorOut`: ``{"error", "message"}``
plus the error's own data (``field`` for bad input, ``job_id``, ``retry_after`` ...). Routes name
the statuses they can answer with :func:`responses`; the statuses every route shares (422 for a
malformed request, 400 and 413 for a body that cannot be read) are documented here, once.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from modelq import errors
from modelq.api.openai_errors import OPENAI_PATHS
from modelq.api.schemas import ErrorOut, OpenAIErrorOut
from modelq.errors import ModelqError

#: What each error status means in this API (the descriptions in the OpenAPI schema).
DESCRIPTIONS = {
    400: "The request body cannot be parsed (e.g. malformed multipart data), or its Host is not served "
    "(MODELQ_ALLOWED_HOSTS).",
    401: "No valid API key (only where api_keys are configured): send `Authorization: Bearer <key>`.",
    404: "Not found: the job, document, artifact, task or model named in the request.",
    409: "Conflict: the job was cancelled, or the document is not enriched (yet).",
    413: "The request body is over its limit (MODELQ_MAX_REQUEST_BYTES, MODELQ_MAX_PDF_BYTES).",
    422: "The request is malformed or out of limits; `field` names the culprit.",
    429: "The queue is full (its max_queued), or the owner has max_queued_per_owner jobs waiting; retry after "
    "`Retry-After` seconds.",
    500: "The job failed (JobFailed): its error is in `message`.",
    503: "The broker cannot be reached.",
    504: "The job did not finish in time; it goes on, and its `job_id` can be polled.",
    507: "The model can never fit its device's memory budget.",
}
#: The one table from error class to HTTP status: the first class the error is an instance of wins
#: (so a subclass comes before its base); any other modelq error is a 500.
STATUSES: list[tuple[type[ModelqError], int]] = [
    (errors.InsecureMonitor, 400),
    (errors.InsecureApi, 400),
    (errors.Unauthorized, 401),
    (errors.NameNotFound, 404),
    (errors.TaskNotFound, 404),
    (errors.JobNotFound, 404),
    (errors.ArtifactNotFound, 404),
    (errors.ModelNotFound, 404),
    (errors.JobCancelled, 409),
    (errors.DocumentNotReady, 409),
    (errors.PayloadTooLarge, 413),
    (errors.InvalidInput, 422),
    (errors.QueueFull, 429),
    (errors.OwnerQueueFull, 429),
    (errors.BrokerUnavailable, 503),
    (errors.JobTimeout, 504),
    (errors.MemoryBudgetExceeded, 507),
]
ERROR_SCHEMA = "ErrorOut"
OPENAI_ERROR_SCHEMA = "OpenAIErrorOut"
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def status_of(exc: ModelqError) -> int:
    """The HTTP status the API answers ``exc`` with (see :data:`STATUSES`)."""
    return next((status for cls, status in STATUSES if isinstance(exc, cls)), 500)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: the error statuses it can answer, each with the error body.

    Args:
        statuses: HTTP status codes, each one of :data:`DESCRIPTIONS`.

    Returns:
        A mapping FastAPI documents as responses whose body is :class:`ErrorOut`.
    """
    return {status: {"model": ErrorOut, "description": DESCRIPTIONS[status]} for status in statuses}


def install_error_handlers(api: FastAPI) -> None:
    """Answer every error with the :class:`ErrorOut` body, and document the answers every route shares."""

    @api.exception_handler(ModelqError)
    async def _modelq_error(_: Request, exc: ModelqError) -> JSONResponse:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse(_json_safe(exc.to_dict()), status_code=status_of(exc), headers=headers)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        problems = []
        for error in errors:
            loc = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")  # our validators' own words
            problems.append(f"{loc or 'body'}: {message}")
        first = errors[0] if errors else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        # `detail` carries pydantic's own errors; their `input` may be raw bytes (a body that is not
        # JSON), a NaN, or an exception in `ctx`, none of which JSON can carry as they are.
        return JSONResponse(
            {"error": "InvalidInput", "message": "; ".join(problems), "field": field, "detail": _json_safe(errors)},
            status_code=422,
        )

    @api.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's and FastAPI's own refusals (an unknown path, a method not allowed, a body
        # that cannot be parsed) in the same shape as ours, not as {"detail": ...}.
        body = {"error": _status_name(exc.status_code), "message": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    _document_shared_errors(api)


def _status_name(status: int) -> str:
    """``NotFound`` for 404, ``MethodNotAllowed`` for 405, ...: the error's name in our body."""
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "HTTPError"


def _json_safe(value: Any) -> Any:
    """``value`` with everything JSON cannot hold made text (bytes, NaN and infinities, lone surrogates, exceptions)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") that a request carried: show it escaped
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(item) for item in value]
    return str(value)


def _document_shared_errors(api: FastAPI) -> None:
    """Make the generated schema tell the truth about the answers every route shares.

    FastAPI documents a 422 as its ``HTTPValidationError`` (``{"detail": [...]}``); ours is an
    :class:`ErrorOut`. And any route that takes a body may answer 413 (:mod:`modelq.api.limits`,
    before the route runs) or 400 (a body FastAPI cannot parse).
    """
    build = api.openapi

    def openapi() -> dict[str, Any]:
        if not api.openapi_schema:
            _rewrite(build())  # FastAPI keeps the schema it built in api.openapi_schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def _rewrite(schema: dict[str, Any]) -> None:
    from modelq.api.auth import PUBLIC_PATHS

    components = schema.setdefault("components", {}).setdefault("schemas", {})
    template = "#/components/schemas/{model}"
    for model in (ErrorOut, OpenAIErrorOut):
        definition = model.model_json_schema(ref_template=template)
        components.update(definition.pop("$defs", {}))
        components.setdefault(model.__name__, definition)
    for route, path in schema.get("paths", {}).items():
        # The OpenAI-compatible routes answer errors in OpenAI's shape (modelq.api.openai_errors).
        name = OPENAI_ERROR_SCHEMA if route in OPENAI_PATHS else ERROR_SCHEMA
        error_body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
        for operation in path.values():
            answers = operation.setdefault("responses", {})
            if "422" in answers:
                answers["422"] = {"description": DESCRIPTIONS[422], "content": error_body}
            if "requestBody" in operation:
                for status in (400, 413):
                    answers.setdefault(str(status), {"description": DESCRIPTIONS[status], "content": error_body})
            if route not in PUBLIC_PATHS:
                answers.setdefault("401", {"description": DESCRIPTIONS[401], "content": error_body})
            for status, answer in answers.items():
                if status.isdigit() and int(status) >= 400 and "application/json" in answer.get("content", {}):
                    answer["content"] = error_body
    for name in _VALIDATION_SCHEMAS:
        components.pop(name, None)
