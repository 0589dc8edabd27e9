"""The one place where modelq errors become HTTP answers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from modelq.errors import ModelqError


def install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(ModelqError)
    async def _modelq_error(_: Request, exc: ModelqError) -> JSONResponse:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            loc = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{loc or 'body'}: {error.get('msg', 'invalid')}")
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return JSONResponse(
            {"error": "InvalidInput", "message": "; ".join(problems), "field": field, "detail": exc.errors()},
            status_code=422,
        )
