"""The console's web application: read-only pages and their JSON twins over one run's outputs.

Event payloads, ids and dead letters are untrusted input. Every page is rendered by Jinja2 with
autoescaping on, no page carries a script, and the Content-Security-Policy forbids scripts
outright, so markup hidden in data can neither run nor load anything. Only GET and HEAD are
routed: the console never writes. With a token set, every request must carry it.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from analysis import plots
from analysis.formatting import DASH, count, human_ms, json_ready, percent, utc, utc_text
from analysis.timeline import find_workflow, instance_timeline
from console import queries
from console.reader import RunReader
from schemas.decode import DecodeRules
from schemas.errors import ConfigError
from state.durations import parse_duration_ms

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TOKEN_COOKIE = "flowkeeper_console"
_WORKFLOW = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_MAX_ID = 1_000
Endpoint = Callable[[Request], Awaitable[Response]]


def _checked_id(value: str, what: str) -> str:
    """Ids come from untrusted events: any text, but bounded and without control characters."""
    if not value or len(value) > _MAX_ID or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise HTTPException(404, f"no such {what}")
    return value


def _date(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{field}: give a date or time like 2026-01-02 or "
                                 "2026-01-02T10:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _int(value: str | None, field: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise HTTPException(400, f"{field}: give a whole number") from None


class TokenGate(BaseHTTPMiddleware):
    """Lets a request through with the token as a bearer header, the cookie, or `?token=` (which
    sets the cookie and drops the token from the address); compared in constant time."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self._token = token.encode()

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
                       ) -> Response:
        header = request.headers.get("authorization", "")
        bearer = header[7:] if header.lower().startswith("bearer ") else None
        if self._matches(bearer) or self._matches(request.cookies.get(TOKEN_COOKIE)):
            return await call_next(request)
        if self._matches(request.query_params.get("token")):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, self._token.decode(), httponly=True,
                                samesite="strict")
            return response
        return HTMLResponse("<!DOCTYPE html><title>token needed</title><p>This console needs its "
                            "token: open it with ?token=… (the --token or FLOWKEEPER_CONSOLE_TOKEN "
                            "it was started with).</p>", status_code=401)


class SecurityHeaders(BaseHTTPMiddleware):
    """The same protective headers on every response, errors included."""

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
                       ) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response


def create_app(reader: RunReader, rules: DecodeRules, *, token: str | None = None,
               refresh_seconds: int = 5) -> Starlette:
    """The console over `reader`'s run; `rules` decode the archive for the instance pages."""
    reader.check()
    env = Environment(loader=PackageLoader("console", "templates"), autoescape=True)
    env.filters.update(count=count, ms=human_ms, percent=percent, utc=utc, utc_text=utc_text,
                       url=lambda v: quote(str(v), safe=""), shown=queries.shown)
    env.globals.update(DASH=DASH, out=str(reader.out))

    def page(template: str, source: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(template).render(source=source, **context),
                            status_code=status_code)

    def overview_data() -> tuple[dict[str, Any], str, dict[str, str]]:
        with reader.open() as opened:
            figures = {"input": plots.throughput(opened.conn),
                       "outcomes": plots.outcomes_over_time(opened.conn),
                       "dead_letters": plots.dead_letter_mix(opened.conn)}
            return (queries.overview(opened.conn), opened.source,
                    {name: plots.png_data_uri(f, dpi=80) for name, f in figures.items()})

    def overview(request: Request) -> Response:
        data, source, charts = overview_data()
        return page("overview.html", source, data=data, charts=charts, refresh=refresh_seconds)

    def overview_json(request: Request) -> Response:
        with reader.open() as opened:
            return JSONResponse(json_ready({**queries.overview(opened.conn),
                                        "source": opened.source}))

    def instance_query(request: Request) -> queries.InstanceQuery:
        q = request.query_params
        return queries.InstanceQuery(
            workflow_type=q.get("workflow_type", ""), state=q.get("state", ""),
            outcome=q.get("outcome", ""), started_from=_date(q.get("started_from"), "started_from"),
            started_until=_date(q.get("started_until"), "started_until"),
            breached_step=q.get("breached_step", ""), corrected=q.get("corrected") == "1",
            text=q.get("q", "")[:_MAX_ID], sort=q.get("sort", "started_at"),
            descending=q.get("order") == "desc", page=_int(q.get("page"), "page", 1))

    def instance_list(request: Request) -> Response:
        query = instance_query(request)
        with reader.open() as opened:
            found = queries.instances(opened.conn, query)
            source = opened.source
        return page("instances.html", source, query=query, found=found,
                    params=_other_params(request), sortable=queries.SORTABLE)

    def instance_list_json(request: Request) -> Response:
        with reader.open() as opened:
            found = queries.instances(opened.conn, instance_query(request))
        return JSONResponse(json_ready(asdict(found)))

    def timeline_of(request: Request) -> tuple[dict[str, Any], str]:
        workflow = request.path_params["workflow"]
        if not _WORKFLOW.fullmatch(workflow):
            raise HTTPException(404, "no such workflow type")
        instance = _checked_id(request.path_params["instance_id"], "instance")
        with reader.open() as opened:
            try:
                find_workflow(opened.conn, instance, workflow)
            except ConfigError:
                raise HTTPException(404, "no such instance in this run") from None
            timeline = instance_timeline(opened.conn, instance, workflow=workflow,
                                         archive=reader.outputs.archive_dir, rules=rules)
            return timeline.to_json(), opened.source

    def instance(request: Request) -> Response:
        data, source = timeline_of(request)
        return page("instance.html", source, t=data)

    def instance_json(request: Request) -> Response:
        return JSONResponse(timeline_of(request)[0])

    def due_query(request: Request) -> queries.DueQuery:
        q = request.query_params
        within = q.get("within", "").strip()
        try:
            within_ms = parse_duration_ms(within) if within else None
        except ValueError as e:
            raise HTTPException(400, f"within: {e}") from None
        return queries.DueQuery(workflow_type=q.get("workflow_type", "")[:200],
                                state=q.get("state", "")[:200],
                                deadline=q.get("deadline", "")[:200], within_ms=within_ms,
                                page=_int(q.get("page"), "page", 1))

    def due_list(request: Request) -> Response:
        query = due_query(request)
        with reader.open() as opened:
            found = queries.due_next(opened.conn, query)
            source = opened.source
        return page("due.html", source, query=query, found=found, params=_other_params(request),
                    within=request.query_params.get("within", ""))

    def due_list_json(request: Request) -> Response:
        with reader.open() as opened:
            found = queries.due_next(opened.conn, due_query(request))
        return JSONResponse(json_ready(asdict(found)))

    def dead_letter_list(request: Request) -> Response:
        reason = request.query_params.get("reason", "")[:200]
        with reader.open() as opened:
            found = queries.dead_letters(opened.conn, reason,
                                         _int(request.query_params.get("page"), "page", 1))
            source = opened.source
        return page("dead_letters.html", source, found=found, reason=reason)

    def record(request: Request) -> Response:
        q = request.query_params
        source = _checked_id(q.get("source", ""), "record")
        partition, offset = _int(q.get("partition"), "partition", -1), _int(q.get("offset"),
                                                                              "offset", -1)
        found = queries.archived_record(reader.outputs.archive_dir, source, partition, offset)
        if found is None:
            raise HTTPException(404, "no such record in the input archive")
        return page("record.html", "archive", r=found)

    def error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return page("error.html", "", status=exc.status_code, detail=exc.detail,
                    status_code=exc.status_code)

    routes = [
        Route("/", overview), Route("/api/overview", overview_json),
        Route("/instances", instance_list), Route("/api/instances", instance_list_json),
        Route("/due", due_list), Route("/api/due", due_list_json),
        Route("/instances/{workflow}/{instance_id:path}", instance),
        Route("/api/instances/{workflow}/{instance_id:path}", instance_json),
        Route("/dead-letters", dead_letter_list), Route("/records", record),
        Mount("/static", StaticFiles(packages=[("console", "static")]), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if token:
        middleware.append(Middleware(TokenGate, token=token))
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: error})


def _other_params(request: Request) -> list[tuple[str, str]]:
    """A list page's query parameters but its page number: what each page link carries on."""
    return [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
