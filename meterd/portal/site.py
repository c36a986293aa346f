"""The web portal on meterd's HTTP port: who is logged in, which page, and its answer.

Every request under ``/portal`` (and a browser's ``GET /``) comes here as an
:class:`~meterd.web.exchange.Incoming`, from meterd's own port or from an HTTP
worker (``--http-workers``), and gets an :class:`~meterd.web.exchange.Answer`;
every other request goes to the API untouched (:meth:`Portal.dispatch`). The
one exception is the live alarm stream, which holds its connection open: only
meterd's own port serves it (:meth:`Portal.serve`); through a worker it is
refused and the page's script reloads the list now and then instead.

What a request goes through, in order:

* its **login session**: the cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure``
  with the ``__Host-`` name over TLS) holds a random id; the server keeps only
  its hash (:mod:`meterd.portal.sessions`), with idle and absolute expiry.
  Before login the same cookie holds a random value the login forms' CSRF
  token is bound to; logging in replaces it, so a value planted before login
  never becomes a login;
* for a POST, its **CSRF token** (:mod:`meterd.portal.csrf`), bound to the
  cookie; a wrong or missing one is refused with 403 and nothing is done;
* the page's **access**: a page that needs a login sends a browser without
  one to the login page; a customer's login reaches the operator's pages
  never (403); the data of a customer page is asked of the API as the
  principal logged in, so the API's own rule decides whose data it is
  (:mod:`meterd.portal.customer_views`);
* logins are **throttled** per address and per id (:mod:`meterd.portal.throttle`):
  a 429 page that says when to try again.

Every answer carries the security headers of :data:`meterd.portal.layout.SECURITY_HEADERS`
(a CSP of ``default-src 'self'`` with no inline code, ``nosniff``,
``frame-ancestors 'none'``) and ``Server-Timing`` with the time the portal
took, and is counted in ``/metrics`` under its page.

Sessions live in this process's memory: a restart logs everyone out, and
meterd processes sharing a port (``--reuse-port``) do not share sessions.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from meterd import credentials
from meterd.directory import OPERATOR, Principal
from meterd.portal import csrf, customer_views, routes, sse, staff_views
from meterd.portal.csrf import CsrfGuard
from meterd.portal.customer_pages import alarm_item_html
from meterd.portal.customer_views import Viewer
from meterd.portal.fmt import DEFAULT_LANG, LANGS, Fmt
from meterd.portal.layout import HTML_CONTENT_TYPE, SECURITY_HEADERS, PageContext, PortalPage, render_bytes
from meterd.portal.live import LiveAlarms, Stream
from meterd.portal.login_page import LoginPage
from meterd.portal.message_page import MessagePage, api_reason
from meterd.portal.sessions import COOKIE_NAME, SECURE_COOKIE_NAME, Session, SessionStore, Who, clear_cookie, session_cookie, session_key
from meterd.portal.static import load_assets
from meterd.portal.throttle import LoginThrottle
from meterd.readings import InvalidField, customer_id
from meterd.store.base import StoreError
from meterd.web.api import Api, run_now, write_reply
from meterd.web.errors import ApiError
from meterd.web.exchange import Answer, Incoming, Reply, incoming_of, write_answer

__all__ = ["Portal"]

log = Logger()

Access = Literal["public", "login", "operator"]  # who may see a page: anyone, anyone logged in, the operator
Handler = Callable[["Visit"], Awaitable[Reply]]

HTML: Final = HTML_CONTENT_TYPE.encode()
TEXT: Final = b"text/plain; charset=utf-8"
#: What a cookie value looks like (``secrets.token_urlsafe(32)``); anything else is ignored.
_COOKIE_VALUE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
SHARED_STORE_POLL: Final = 2.0  # seconds between the live streams' looks at a store other processes write
#: Statuses the message page has its own words for; others take their class's.
_TITLED: Final = (400, 403, 404, 405, 500, 503)


@dataclass
class Visit:
    """One request as the portal sees it."""

    incoming: Incoming
    query: dict[str, str]
    form: dict[str, str]  # a POST's fields (empty for a GET)
    cookie: str | None  # the cookie's value, when well-formed
    login: Session | None  # the login session the cookie holds, if any
    lang: str

    @property
    def url(self) -> str:
        query = self.incoming.query.decode("latin-1")
        return self.incoming.path + (f"?{query}" if query else "")

    @property
    def binding(self) -> str | None:
        """What this visit's CSRF tokens are bound to: the hash of the cookie (a login session's key, or the pre-login value's)."""
        return None if self.cookie is None else session_key(self.cookie)


@dataclass(frozen=True)
class Page:
    methods: tuple[str, ...]
    access: Access
    handler: Handler


class Portal:
    """The portal's pages, served over :class:`~meterd.web.api.Api` on the same port."""

    def __init__(self, api: Api, clock: IReactorTime, *, secure: bool = False) -> None:
        """``secure``: served over TLS (the cookie is then ``Secure``, under the ``__Host-`` name)."""
        self.api = api
        self.clock = clock
        self.secure = secure
        self.cookie_name = SECURE_COOKIE_NAME if secure else COOKIE_NAME
        self.sessions = SessionStore(clock.seconds)
        self.throttle = LoginThrottle(clock.seconds)
        # With a shared store other processes settle alarms this one is not told of: the streams poll too.
        self.live = LiveAlarms(clock, self.sessions, poll=SHARED_STORE_POLL if api.store.shared else None)
        self.csrf = CsrfGuard(csrf.new_secret())  # a restart voids the forms shown before, as it ends the sessions
        self.assets = load_assets()
        empresa = api.tariff.empresa
        self.utility = empresa.nome if empresa is not None else "meterd"
        r = routes
        self.pages: dict[str, Page] = {
            "/": Page(("GET",), "public", self._root),
            r.PREFIX: Page(("GET",), "public", self._root),
            r.LOGIN: Page(("GET", "POST"), "public", self._login),
            r.LOGIN_STAFF: Page(("POST",), "public", self._login),
            r.LOGOUT: Page(("POST",), "login", self._logout),
            r.OVERVIEW: Page(("GET",), "login", self._customer_page(customer_views.overview)),
            r.HISTORY: Page(("GET",), "login", self._customer_page(customer_views.history, query=True)),
            r.HISTORY_CSV: Page(("GET",), "login", self._history_csv),
            r.BILL: Page(("GET",), "login", self._customer_page(customer_views.bill, query=True)),
            r.ALARMS: Page(("GET",), "login", self._customer_page(customer_views.alarms)),
            r.ALARM_ACK: Page(("POST",), "login", self._ack),
            r.ALARM_EVENTS: Page(("GET",), "public", self._no_stream),  # decides its own refusals: a stream is no page to redirect
            r.STAFF_SEARCH: Page(("GET",), "operator", self._staff(lambda d, v: staff_views.search(d, v.query))),
            r.STAFF_CUSTOMER: Page(("GET",), "operator", self._staff(lambda d, v: staff_views.customer(d, v.query))),
            r.STAFF_NEW_CUSTOMER: Page(("GET", "POST"), "operator", self._new_customer),
            r.STAFF_NEW_METER: Page(("GET", "POST"), "operator", self._new_meter),
            r.STAFF_NEW_TOKEN: Page(("GET", "POST"), "operator", partial(self._credential, "token")),
            r.STAFF_NEW_KEY: Page(("GET", "POST"), "operator", partial(self._credential, "key")),
            r.STAFF_FLEET: Page(("GET",), "operator", self._staff(lambda d, v: staff_views.fleet(d))),
        }

    # -- the port's side ---------------------------------------------------------------

    def owns(self, method: str, path: str) -> bool:
        """Whether a request is the portal's: anything under the prefix, and a browser's ``GET /``."""
        if path == "/":
            return method in ("GET", "HEAD")
        return path == routes.PREFIX or path.startswith(routes.PREFIX + "/")

    def dispatch(self, incoming: Incoming) -> Coroutine[Any, Any, Reply]:
        """The answer to any request of meterd's port: the portal's pages here, the rest the API's."""
        if self.owns(incoming.method, incoming.path):
            return self.respond(incoming)
        return self.api.respond(incoming)

    def serve(self, request: Request) -> None:
        """meterd's own port: every request, the live alarm stream included."""
        if request.path == _EVENTS and request.method == b"GET":
            Deferred.fromCoroutine(self._stream(request)).addErrback(self._stream_failed, request)
        else:
            run_now(self.dispatch(incoming_of(request)), partial(write_reply, request))

    def token_replaced(self, customer_id: str) -> None:
        """A customer got a new token (``/novoToken``, here or in another process): their sessions end now."""
        self.sessions.logout_everywhere(Who("customer", customer_id))
        self.live.sessions_changed()

    # -- one request -------------------------------------------------------------------

    async def respond(self, incoming: Incoming) -> Reply:
        started = time.perf_counter()
        path = incoming.path
        page = self.pages.get(path)
        label = path if page is not None else routes.STATIC if path.startswith(routes.STATIC + "/") else "/portal/unknown"
        visit = self._visit(incoming)
        try:
            answer = await self._answer(visit, page)
        except ApiError as e:
            # A refusal says only that the page is not theirs; the API's reason (a token's) would confuse.
            detail = None if e.status in (401, 403) else api_reason(Fmt(visit.lang), e)
            answer = self._message(visit, e.status, detail=detail)
        except StoreError:
            answer = self._message(visit, 503)
        except Exception:
            log.failure("unhandled error answering {path}", Failure(), path=path)
            answer = self._message(visit, 500)
        self.api.count(label, answer.status, 1)
        answer.headers["Server-Timing"] = f"portal;dur={(time.perf_counter() - started) * 1000:.1f}"
        return answer

    async def _answer(self, visit: Visit, page: Page | None) -> Reply:
        incoming = visit.incoming
        if page is None:
            asset = self.assets.get(incoming.path.removeprefix(routes.STATIC + "/"))
            if asset is None or not incoming.path.startswith(routes.STATIC + "/") or incoming.method not in ("GET", "HEAD"):
                return self._message(visit, 404)
            if asset.fresh(incoming.if_none_match):
                return Answer(304, asset.content_type, b"", asset.headers())
            return Answer(200, asset.content_type, asset.body, asset.headers())
        allowed = (*page.methods, "HEAD") if "GET" in page.methods else page.methods
        if incoming.method not in allowed:
            return self._message(visit, 405, headers={"Allow": ", ".join(allowed)})
        if incoming.method == "POST" and not self.csrf.check(visit.binding or "", visit.form.get(csrf.FIELD)):
            if incoming.path in (routes.LOGIN, routes.LOGIN_STAFF):
                return self._login_page(visit, 403, {"error": "expired", "form": _login_form(incoming.path)})
            return self._message(visit, 403, text=Fmt(visit.lang).t("error.csrf"))
        if page.access != "public":
            if visit.login is None:  # after login, back to the page (a form's POST is not repeated)
                return self._redirect(routes.href(routes.LOGIN, next=visit.url if incoming.method != "POST" else None))
            if page.access == "operator" and visit.login.who.kind != "operator":
                return self._message(visit, 403)
        return await page.handler(visit)

    def _visit(self, incoming: Incoming) -> Visit:
        query = dict(reversed(parse_qsl(incoming.query.decode("utf-8", "replace"), keep_blank_values=True)))
        form: dict[str, str] = {}
        if incoming.method == "POST":
            form = dict(reversed(parse_qsl(incoming.body.decode("utf-8", "replace"), keep_blank_values=True)))
        cookie = self._cookie(incoming.cookie)
        login = self.sessions.get(cookie)
        wanted = query.get("lang") or form.get("lang")
        if wanted in LANGS:
            if login is not None and login.lang != wanted and cookie is not None:
                login = self.sessions.set_lang(cookie, wanted)
            lang = wanted
        else:
            lang = login.lang if login is not None else DEFAULT_LANG
        return Visit(incoming, query, form, cookie, login, lang)

    def _cookie(self, header: str | None) -> str | None:
        for part in (header or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie_name and _COOKIE_VALUE.fullmatch(value):
                return value
        return None

    # -- answers -------------------------------------------------------------------------

    def context(self, visit: Visit, viewing: str | None = None) -> PageContext:
        who = visit.login.who if visit.login is not None else None
        binding = visit.binding
        return PageContext(
            fmt=Fmt(visit.lang),
            url=visit.url,
            who=who,
            csrf=None if binding is None else self.csrf.token(binding),
            utility=self.utility,
            viewing=viewing,
        )

    def _html(self, status: int, page: PortalPage, headers: Mapping[str, str] | None = None) -> Answer:
        return Answer(status, HTML, render_bytes(page), {**SECURITY_HEADERS, **(headers or {})})

    def _redirect(self, location: str, status: int = 303, cookie: str | None = None) -> Answer:
        headers = {**SECURITY_HEADERS, "Location": location}
        if cookie is not None:
            headers["Set-Cookie"] = cookie
        return Answer(status, HTML, b"", headers)

    def _message(
        self, visit: Visit, status: int, *, text: str | None = None, detail: str | None = None, headers: Mapping[str, str] | None = None
    ) -> Answer:
        titled = status if status in _TITLED else (500 if status >= 500 else 400)
        page = MessagePage(self.context(visit), {"status": titled, "text": text, "detail": detail})
        return self._html(status, page, headers)

    def _home(self, who: Who) -> str:
        return routes.STAFF_SEARCH if who.kind == "operator" else routes.OVERVIEW

    # -- login and logout ----------------------------------------------------------------

    async def _root(self, visit: Visit) -> Answer:
        return self._redirect(routes.OVERVIEW, 302 if visit.incoming.path == "/" else 301)

    def _login_page(self, visit: Visit, status: int, data: dict[str, Any], headers: Mapping[str, str] | None = None) -> Answer:
        """The login page, bound to the visitor's cookie (a new pre-login one if it has none)."""
        extra = dict(headers or {})
        if visit.cookie is None:
            visit.cookie = credentials.new_token()
            extra["Set-Cookie"] = session_cookie(visit.cookie, secure=self.secure)
        data.setdefault("next", _safe_next(visit.query.get("next") or visit.form.get("next")))
        return self._html(status, LoginPage(self.context(visit), data), extra)

    async def _login(self, visit: Visit) -> Answer:
        if visit.login is not None:
            return self._redirect(_safe_next(visit.query.get("next")) or self._home(visit.login.who))
        if visit.incoming.method != "POST":
            return self._login_page(visit, 200, {})
        form = visit.form
        operator = visit.incoming.path == routes.LOGIN_STAFF
        typed = (form.get("id") or "").strip()
        login_id = "operator" if operator else _login_id(typed)
        shown = {} if operator else {"id": typed}
        wait = self.throttle.retry_after(visit.incoming.client, login_id)
        if wait > 0:
            seconds = math.ceil(wait)
            data = {**shown, "error": "throttled", "retry_after": seconds, "form": _login_form(visit.incoming.path)}
            return self._login_page(visit, 429, data, {"Retry-After": str(seconds)})
        who = await (self._operator(form.get("operator_token") or "") if operator else self._customer(typed, form.get("token") or ""))
        if who is None:
            self.throttle.failed(visit.incoming.client, login_id)
            return self._login_page(visit, 200, {**shown, "error": "failed", "form": _login_form(visit.incoming.path)})
        self.throttle.succeeded(login_id)
        session_id, _ = self.sessions.create(who, visit.lang)
        target = _safe_next(form.get("next")) or self._home(who)
        return self._redirect(target, cookie=session_cookie(session_id, secure=self.secure))

    async def _customer(self, typed: str, token: str) -> Who | None:
        """The customer whose CPF/CNPJ and token these are, or None."""
        try:
            cid = customer_id(typed)
        except InvalidField:
            return None
        if not token:
            return None
        wanted = Principal("customer", cid)
        principal = self.api.directory.principal(token)
        if principal is None and self.api.store.shared:  # registered by another process, maybe
            await self.api.customer(cid, refresh_only=True)
            principal = self.api.directory.principal(token)
        return Who("customer", cid) if principal == wanted else None

    async def _operator(self, token: str) -> Who | None:
        expected = self.api.operator_token
        return Who("operator") if expected and token and credentials.same_secret(token, expected) else None

    async def _logout(self, visit: Visit) -> Answer:
        self.sessions.logout(visit.cookie)
        self.live.sessions_changed()
        return self._redirect(routes.LOGIN, cookie=clear_cookie(secure=self.secure))

    # -- customer pages --------------------------------------------------------------------

    def _viewer(self, visit: Visit, params: Mapping[str, str]) -> Viewer | Answer:
        """Whose pages the login session is looking at: a customer its own (``id`` only to be refused by the API
        if it names another), the operator the customer ``id`` names (the search page without one)."""
        assert visit.login is not None
        who = visit.login.who
        raw = params.get("id")
        if who.kind == "operator" and not raw:
            return self._redirect(routes.STAFF_SEARCH)
        try:
            cid = customer_id(raw) if raw else who.customer_id
        except InvalidField as e:
            raise ApiError(400, e.code, str(e)) from None
        assert cid is not None
        client = visit.incoming.client
        if who.kind == "operator":
            return Viewer(self.api, OPERATOR, self.context(visit, viewing=cid), cid, client)
        return Viewer(self.api, Principal("customer", who.customer_id), self.context(visit), cid, client)

    def _customer_page(self, build: Callable[..., Awaitable[PortalPage]], *, query: bool = False) -> Handler:
        async def handler(visit: Visit) -> Answer:
            viewer = self._viewer(visit, visit.query)
            if isinstance(viewer, Answer):
                return viewer
            page = await (build(viewer, visit.query) if query else build(viewer))
            return self._html(200, page)

        return handler

    async def _history_csv(self, visit: Visit) -> Reply:
        viewer = self._viewer(visit, visit.query)
        if isinstance(viewer, Answer):
            return viewer
        reply = await customer_views.history_csv(viewer, visit.query)
        reply.headers.update(SECURITY_HEADERS)
        return reply

    async def _ack(self, visit: Visit) -> Answer:
        viewer = self._viewer(visit, visit.form)
        if isinstance(viewer, Answer):
            return viewer
        return self._redirect(await customer_views.ack(viewer, visit.form))

    # -- live alarms ---------------------------------------------------------------------

    async def _no_stream(self, visit: Visit) -> Answer:
        """The stream asked of an HTTP worker, which cannot hold it open: refused as meterd's port would
        refuse it, else 503 (the script falls back to reloading the list)."""
        answer = await self._open_stream(visit, None)
        assert answer is not None
        return answer

    async def _stream(self, request: Request) -> None:
        started = time.perf_counter()
        incoming = incoming_of(request)
        visit = self._visit(incoming)
        answer = await self._open_stream(visit, request)
        self.api.count(routes.ALARM_EVENTS, 200 if answer is None else answer.status, 1)
        if answer is not None:
            answer.headers["Server-Timing"] = f"portal;dur={(time.perf_counter() - started) * 1000:.1f}"
            write_answer(request, answer)

    def _stream_failed(self, failure: Failure, request: Request) -> None:
        log.failure("unhandled error opening a live alarm stream", failure)
        write_answer(request, Answer(500, TEXT, b"internal error\n", dict(SECURITY_HEADERS)))

    async def _open_stream(self, visit: Visit, request: Request | None) -> Answer | None:
        """Start the stream on ``request`` (None), or the answer that refuses it (always, without a request to hold)."""

        def refused(status: int, text: str, **headers: str) -> Answer:
            return Answer(status, TEXT, text.encode() + b"\n", {**SECURITY_HEADERS, **headers})

        login = visit.login
        if login is None:
            return refused(403, "log in first")
        viewer = self._viewer(visit, visit.query)
        if isinstance(viewer, Answer):
            return refused(400, "which customer?")
        last = request.getHeader(b"last-event-id") if request is not None else None
        cursor = (last.decode("latin-1") if last else None) or visit.query.get("cursor") or None
        try:
            view = await viewer.ask("GET", "/getAlarme", cursor=cursor)
        except ApiError as e:
            return refused(e.status, e.message)
        except StoreError:
            return refused(503, "the store is unavailable", **{"Retry-After": "5"})
        if request is None:
            return refused(503, "live updates are served by meterd's own port only", **{"Retry-After": "60"})
        if not self.live.room_for(login.key):
            return refused(503, "too many live connections", **{"Retry-After": "60"})
        request.setResponseCode(200)
        for name, value in {**SECURITY_HEADERS, "Content-Type": "text/event-stream; charset=utf-8"}.items():
            request.setHeader(name, value)
        first = _alarm_events(viewer, view) if cursor is not None else []
        self.live.open(Stream(request, login.key, view["cursor"], partial(_fetch, viewer), self.clock.seconds()), first)
        return None

    # -- operator pages ------------------------------------------------------------------

    def _desk(self, visit: Visit) -> staff_views.Desk:
        return staff_views.Desk(self.api, self.context(visit), visit.incoming.client)

    def _staff(self, build: Callable[[staff_views.Desk, Visit], Awaitable[PortalPage]]) -> Handler:
        async def handler(visit: Visit) -> Answer:
            return self._html(200, await build(self._desk(visit), visit))

        return handler

    async def _new_customer(self, visit: Visit) -> Answer:
        form = visit.form if visit.incoming.method == "POST" else None
        status, page = await staff_views.new_customer(self._desk(visit), form)
        return self._html(status, page)

    async def _new_meter(self, visit: Visit) -> Answer:
        form = visit.form if visit.incoming.method == "POST" else None
        status, page = await staff_views.new_meter(self._desk(visit), visit.query, form)
        return self._html(status, page)

    async def _credential(self, kind: str, visit: Visit) -> Answer:
        post = visit.incoming.method == "POST"
        page = await staff_views.credential(self._desk(visit), kind, visit.form if post else visit.query, post)
        return self._html(200, page)


_EVENTS: Final = routes.ALARM_EVENTS.encode()


def _login_form(path: str) -> str:
    return "operator" if path == routes.LOGIN_STAFF else "customer"


def _login_id(typed: str) -> str:
    """What a customer's failed logins are counted under: the CPF/CNPJ, however it was typed."""
    try:
        return customer_id(typed)
    except InvalidField:
        return typed[:32]


def _safe_next(target: str | None) -> str | None:
    """``target`` if it is a portal page of this site to go to after login, else None (no open redirect)."""
    if not target or any(c in target for c in "\\\r\n"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(routes.PREFIX + "/"):
        return None
    if parts.path in (routes.LOGIN, routes.LOGIN_STAFF, routes.LOGOUT, routes.ALARM_EVENTS):
        return None
    return target


def _alarm_events(viewer: Viewer, view: Mapping[str, Any]) -> list[bytes]:
    """The events of a ``/getAlarme`` answer as the live list's events: an alarm raised or
    acknowledged is its list item, rendered as on the page; a cleared one leaves the list."""
    active = {a["alarm_id"]: a for a in view["active"]}
    out = []
    for event in view["events"]:
        alarm = active.get(event["alarm_id"])
        if alarm is not None:
            out.append(sse.event("alarm", alarm_item_html(alarm, viewer.ctx), event["event_id"]))
        elif event["type"] == "cleared":
            out.append(sse.event("cleared", f"alarm-{event['alarm_id']}", event["event_id"]))
    return out


async def _fetch(viewer: Viewer, cursor: int) -> tuple[list[bytes], int]:
    view = await viewer.ask("GET", "/getAlarme", cursor=cursor)
    return _alarm_events(viewer, view), int(view["cursor"])
