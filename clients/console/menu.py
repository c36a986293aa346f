"""The interactive console's state machine: modes, menus and the forms behind them.

The menu knows nothing about terminals: it receives whole lines through
:meth:`Menu.feed` and talks back through an :class:`Output` (show a block,
show a prompt, say it is waiting, interrupt with a notification, redraw,
quit). That keeps it drivable from a ``StringTransport`` in tests and from
either the plain line frontend (pipes) or the line-editing terminal frontend.

Lines that arrive while a request is in flight are queued, not dropped, so a
script piped into stdin works exactly like a person typing slowly.

An answer the renderer draws (a bill, a history, alarms, meters) is kept as a
:class:`View` until the next line is typed: when the terminal is resized it is
drawn again at the new size, and when it and the menu would not fit on the
screen together, the menu waits behind a one-line prompt instead of pushing
the view's first lines off the screen.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from clients.api import ApiError, MeterdClient

from .choices import EXPORT, KIND, LIGACAO, METER_MODE, Choice
from .errors import Invalid, describe_error
from .export import ExportFile
from .fields import parse_choice, parse_int, parse_kwh, parse_positive_number, parse_taxid, parse_text, parse_url, parse_when
from .messages import Messages
from .poller import AlarmPoller
from .render import Renderer

__all__ = ["Output", "Menu", "View"]

log = Logger()


class Output(Protocol):
    def show(self, text: str) -> None: ...
    def prompt(self, text: str, *, secret: bool = False) -> None: ...
    def notify(self, text: str) -> None: ...
    def busy(self, text: str | None) -> None: ...
    def redraw(self, text: str) -> None: ...
    def quit(self) -> None: ...


@dataclass(frozen=True)
class View:
    """An answer as the renderer draws it, kept so it can be drawn again at a new size."""

    draw: Callable[[], str]


# -- forms --------------------------------------------------------------------


@dataclass
class Field:
    name: str
    prompt: str  # the text shown, in the screen's language
    parse: Callable[[str], Any]
    required: bool = True
    default: Any = None
    secret: bool = False  # read without echo (tokens)


@dataclass
class Form:
    fields: list[Field]
    submit: Callable[[dict[str, Any]], Any]  # returns View, str, Deferred of either, or None
    values: dict[str, Any] = field(default_factory=dict)
    index: int = 0

    @property
    def current(self) -> Field:
        return self.fields[self.index]


class Menu:
    """Mode choice, operator menu, customer menu, and the forms behind them."""

    def __init__(
        self,
        out: Output,
        *,
        msgs: Messages,
        renderer: Renderer,
        make_client: Callable[[str | None], MeterdClient],
        clock: IReactorTime,
        poll_interval: float = 30.0,
        operator_token: str | None = None,
        customer_token: str | None = None,
        start_mode: str | None = None,
        customer_id: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.out = out
        self.m = msgs
        self.r = renderer
        self.make_client = make_client
        self.clock = clock
        self.poll_interval = poll_interval
        self.operator_token = operator_token
        self.customer_token = customer_token
        self.start_mode = start_mode
        self.preset_customer = customer_id
        self.verbose = verbose
        self.state = "mode"
        self.form: Form | None = None
        self.client: MeterdClient | None = None
        self.customer: str | None = None
        self.tz: str | None = None
        self.poller: AlarmPoller | None = None
        self._view: View | None = None
        self._view_lines = 0
        self._more: Callable[[], Any] | None = None  # the next page of the last search or audit log shown
        self._queue: list[str] = []
        self._busy = False
        self._eof = False
        self._done = False

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self.out.show(self.m("app.title") + "\n")
        result = None
        if self.start_mode == "operator":
            result = self._enter_operator()
        elif self.start_mode == "customer":
            result = self._begin_customer()
        self._settle(result)

    def _settle(self, result: Any) -> bool:
        """After a handler: wait for its request (lines queue meanwhile), else show what comes next.

        Whether a request is still out (the menu is busy) afterwards.
        """
        if isinstance(result, Deferred):
            self._busy = True
            self.out.busy(self.m("wait.working"))
            result.addErrback(self._report)
            result.addBoth(self._idle)
        else:
            self._after()
        return self._busy

    def feed(self, line: str) -> None:
        """One line typed; stored in NFC, so an accent typed as a separate
        combining mark gives the same name as the precomposed letter."""
        if self._done:
            return
        self._view = None
        self._queue.append(unicodedata.normalize("NFC", line.rstrip("\r\n")))
        self._drain()

    def eof(self) -> None:
        """stdin closed: finish what was queued, then leave."""
        self._eof = True
        self._maybe_finish()

    def resize(self, width: int, height: int | None) -> None:
        """The terminal changed size: lay out the next views for it, and draw
        the view on screen again if nothing was typed since it was shown."""
        self.r.resize(width, height)
        if self._view is None or self._busy or self.form is not None or self._done:
            return
        self._show_view(self._view, redraw=True)
        self._after()

    def _drain(self) -> None:
        while self._queue and not self._busy and not self._done:
            line = self._queue.pop(0)
            try:
                result = self._handle(line)
            except Exception as e:  # a bug must not kill the console
                log.failure("menu handler failed")
                self.out.show(describe_error(e, self.m) + "\n")
                result = None
            if self._settle(result):
                return
        self._maybe_finish()

    def _idle(self, _: Any) -> None:
        self._busy = False
        self.out.busy(None)
        if not self._done:
            self._after()
            self._drain()

    def _report(self, failure: Failure) -> None:
        err = failure.value
        assert err is not None  # a Failure always holds its exception
        if not isinstance(err, ApiError):
            log.failure("request failed", failure)
        self.out.show(describe_error(err, self.m, verbose=self.verbose) + "\n")

    def _maybe_finish(self) -> None:
        if self._eof and not self._queue and not self._busy and not self._done:
            self._quit()

    def _quit(self) -> None:
        if self._done:
            return
        self._done = True
        self._stop_polling()
        self.out.show(self.m("menu.bye") + "\n")
        self.out.quit()

    def _menu_text(self) -> str:
        if self.state == "operator":
            return self.m("menu.operator")
        if self.state == "manage":
            return self.m("menu.manage", more=self.m("menu.more") if self._more is not None else "")
        if self.state == "webhooks":
            return self.m("menu.webhooks")
        if self.state == "customer":
            return self.m("menu.customer", id=self._shown_id())
        return self.m("menu.mode")

    def _after(self) -> None:
        """Show what the user answers next: a form field or a menu."""
        if self._done or self._busy:
            return
        if self.form is not None:
            current = self.form.current
            self.out.prompt(current.prompt, secret=current.secret)
            return
        menu = self._menu_text()
        rows = self.r.height
        if self._view is not None and rows is not None and self._view_lines + menu.count("\n") + 2 > rows:
            self.out.prompt(self.m("prompt.after_view"))
            return
        self.out.show(menu + "\n")
        self.out.prompt(self.m("prompt.choice"))

    def _shown_id(self) -> str:
        from meterd.taxid import format_taxid

        try:
            return format_taxid(self.customer or "")
        except ValueError:
            return self.customer or ""

    def _show_view(self, view: View, *, redraw: bool = False) -> None:
        text = view.draw()
        self._view = view
        self._view_lines = text.count("\n")
        if redraw:
            self.out.redraw(text)
        else:
            self.out.show(text)

    # -- dispatch -----------------------------------------------------------

    def _handle(self, line: str) -> Any:
        if self.form is not None:
            return self._form_input(line)
        choice = line.strip()
        table: dict[str, Callable[[], Any]]
        if self.state == "mode":
            table = {"1": self._enter_operator, "2": self._begin_customer, "0": self._quit}
        elif self.state == "operator":
            table = {
                "1": self._register_customer,
                "2": self._register_meter,
                "3": self._list_meters,
                "4": self._bill,
                "5": self._history,
                "6": self._alarms,
                "7": self._ack,
                "8": self._new_credential,
                "9": self._switch_mode,
                "10": self._enter_manage,
                "e": self._export,
                "w": self._enter_webhooks,
                "0": self._quit,
            }
        elif self.state == "webhooks":
            table = {"1": self._list_webhooks, "2": self._register_webhook, "3": self._remove_webhook, "0": self._leave_webhooks}
        elif self.state == "manage":
            table = {
                "1": self._search,
                "2": self._record,
                "3": self._update,
                "4": self._retire,
                "5": self._replace,
                "6": self._audit,
                "0": self._leave_manage,
            }
            more = self._more
            if more is not None:
                table["m"] = lambda: self._ask([], lambda _: more())
        else:
            table = {
                "1": self._bill,
                "2": self._history,
                "3": self._alarms,
                "4": self._ack,
                "9": self._switch_mode,
                "0": self._quit,
            }
        action = table.get(choice.lower())
        if choice:
            self._more = None  # a page is continued right after it, or not at all
        if action is None:
            if choice:
                self.out.show(self.m("menu.invalid", choice=choice) + "\n")
            return None
        return action()

    def _form_input(self, line: str) -> Any:
        form = self.form
        assert form is not None
        fld = form.current
        text = line.strip()
        if not text:
            if fld.required:
                self.form = None
                self.out.show(self.m("menu.cancelled") + "\n")
                return None
            value = fld.default
        else:
            try:
                value = fld.parse(text)
            except Invalid as e:
                self.out.show(str(e) + "\n")
                return None
        form.values[fld.name] = value
        form.index += 1
        if form.index < len(form.fields):
            return None
        self.form = None
        return self._submit(form)

    def _submit(self, form: Form) -> Any:
        result = maybeDeferred(form.submit, form.values)

        def shown(answer: Any) -> None:
            if isinstance(answer, View):
                self._show_view(answer)
            elif isinstance(answer, str) and answer:
                self.out.show(answer if answer.endswith("\n") else answer + "\n")

        result.addCallback(shown)
        return result

    def _ask(self, fields: list[Field], submit: Callable[[dict[str, Any]], Any]) -> Any:
        """Start a form; a form with no fields submits at once."""
        self.form = Form(list(fields), submit)
        if not self.form.fields:
            self.form = None
            return self._submit(Form([], submit))
        return None

    # -- common fields ------------------------------------------------------

    def _f_customer(self) -> Field:
        return Field("id", self.m("field.customer_id"), lambda t: parse_taxid(self.m, t))

    def _f_token(self) -> Field:
        return Field("token", self.m("field.token"), str.strip, secret=True)

    def _f_choice(self, name: str, prompt_key: str, choice: Choice, default: str | None = None) -> Field:
        """An optional choice; left empty it sends ``default`` (``None``: the server's)."""
        m = self.m
        prompt = m(prompt_key, choices="/".join(choice.labels(m)), default=choice.label(m, choice.default))
        return Field(name, prompt, lambda t: parse_choice(m, choice, t), required=False, default=default)

    def _f_whose(self) -> list[Field]:
        """The operator says whose data to see; a customer sees their own."""
        return [self._f_customer()] if self.state == "operator" else []

    def _whose(self, values: dict[str, Any]) -> str:
        cid = values.get("id") if self.state == "operator" else self.customer
        assert cid is not None
        return str(cid)

    def _shown_zone(self) -> str | None:
        """The zone times are shown in: the customer's own, learnt at login.

        The server writes times with the customer's UTC offset already, so the
        operator's views, which never log in, show them as they come.
        """
        return self.tz if self.state == "customer" else None

    # -- modes --------------------------------------------------------------

    def _enter_operator(self) -> Any:
        if self.operator_token:
            self._set_operator(self.operator_token)
            return None
        self.out.show(self.m("invalid.no_token") + "\n")

        def got(values: dict[str, Any]) -> None:
            self.operator_token = values["token"]
            self._set_operator(values["token"])

        return self._ask([self._f_token()], got)

    def _set_operator(self, token: str) -> None:
        self._stop_polling()
        self.client = self.make_client(token)
        self.customer = None
        self.state = "operator"

    def _begin_customer(self) -> Any:
        fields: list[Field] = []
        if not self.preset_customer:
            fields.append(self._f_customer())
        if not self.customer_token:
            fields.append(self._f_token())
        return self._ask(fields, self._login_customer)

    def _login_customer(self, values: dict[str, Any]) -> Deferred[None]:
        """Check the token against the server before showing the menu; the
        answer also tells the customer's time zone for showing times."""
        cid = values.get("id") or parse_taxid(self.m, self.preset_customer or "")  # cli normalizes it
        token = values.get("token") or self.customer_token
        client = self.make_client(token)

        def ok(doc: dict[str, Any]) -> None:
            self._set_customer(client, cid, token, doc.get("tz"))

        def failed(f: Failure) -> Failure | None:
            err = f.value
            if isinstance(err, ApiError) and err.status not in (0, 401, 403, 404):
                # The history route misbehaving should not lock the customer out.
                self._set_customer(client, cid, token, None)
                return None
            self.preset_customer = None
            return f

        return client.history(cid, "D", 0).addCallbacks(ok, failed)

    def _set_customer(self, client: MeterdClient, cid: str, token: str | None, tz: str | None) -> None:
        self._stop_polling()
        self.client = client
        self.customer = cid
        self.customer_token = token
        self.tz = tz
        self.state = "customer"
        self.poller = AlarmPoller(
            client,
            cid,
            clock=self.clock,
            interval=self.poll_interval,
            notify=self.out.notify,
            renderer=self.r,
            msgs=self.m,
            tz=tz,
        )
        self.poller.start()

    def _switch_mode(self) -> None:
        self._stop_polling()
        self.state = "mode"
        self.customer = None
        self.preset_customer = None
        self.start_mode = None

    def _stop_polling(self) -> None:
        if self.poller is not None:
            self.poller.stop()
            self.poller = None

    # -- operator actions ---------------------------------------------------

    def _register_customer(self) -> Any:
        m = self.m
        fields = [
            self._f_customer(),
            Field("name", m("field.name"), str.strip),
            self._f_choice("ligacao", "field.ligacao", LIGACAO),
            Field("limite_kw", m("field.limite_kw"), lambda t: parse_positive_number(m, t), required=False),
            Field("limite_kwh", m("field.limite_kwh"), lambda t: parse_positive_number(m, t), required=False),
        ]

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            d = self.client.register_customer(
                v["id"], v["name"], ligacao=v["ligacao"], limite_kw=v["limite_kw"], limite_kwh=v["limite_kwh"]
            )
            return d.addCallback(self.r.customer_created)

        self.out.show(m("menu.cancel_hint") + "\n")
        return self._ask(fields, submit)

    def _register_meter(self) -> Any:
        fields = [self._f_customer(), self._f_choice("mode", "field.meter_mode", METER_MODE)]

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            return self.client.register_meter(v["id"], mode=v["mode"]).addCallback(self.r.meter_created)

        self.out.show(self.m("menu.cancel_hint") + "\n")
        return self._ask(fields, submit)

    def _list_meters(self) -> Any:
        def submit(v: dict[str, Any]) -> Deferred[View]:
            assert self.client is not None
            d = self.client.meters(self._whose(v))
            return d.addCallback(lambda doc: View(lambda: self.r.meters(doc)))

        return self._ask([self._f_customer()], submit)

    def _new_credential(self) -> Any:
        """A lost token or key replaced: blank meter number means the customer's token."""
        m = self.m
        fields = [
            self._f_customer(),
            Field("meter", m("field.meter_credential"), lambda t: parse_int(m, t, minimum=1), required=False),
        ]

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            if v["meter"] is None:
                return self.client.new_token(v["id"]).addCallback(self.r.new_token)
            return self.client.new_key(v["id"], v["meter"]).addCallback(self.r.new_key)

        self.out.show(m("menu.cancel_hint") + "\n")
        return self._ask(fields, submit)

    # -- alarm webhooks (the operator's submenu) -----------------------------

    def _enter_webhooks(self) -> None:
        self.state = "webhooks"

    def _leave_webhooks(self) -> None:
        self.state = "operator"

    def _list_webhooks(self) -> Any:
        def submit(_: dict[str, Any]) -> Deferred[View]:
            assert self.client is not None
            return self.client.webhooks().addCallback(lambda doc: View(lambda: self.r.webhooks(doc)))

        return self._ask([], submit)

    def _register_webhook(self) -> Any:
        m = self.m
        fields = [
            Field("url", m("field.url"), lambda t: parse_url(m, t)),
            Field("id", m("field.webhook_customer"), lambda t: parse_taxid(m, t), required=False),
        ]

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            return self.client.register_webhook(v["url"], v["id"]).addCallback(self.r.webhook_created)

        self.out.show(m("menu.cancel_hint") + "\n")
        return self._ask(fields, submit)

    def _remove_webhook(self) -> Any:
        m = self.m

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            return self.client.remove_webhook(v["webhook_id"]).addCallback(self.r.webhook_removed)

        return self._ask([Field("webhook_id", m("field.webhook_id"), lambda t: parse_int(m, t, minimum=1))], submit)

    # -- a customer's data: the customer's own menu, or the operator's ------

    def _bill(self) -> Any:
        m = self.m

        def submit(v: dict[str, Any]) -> Deferred[View]:
            assert self.client is not None
            tz = self._shown_zone()
            d = self.client.bill(self._whose(v), v["periodo"])
            return d.addCallback(lambda doc: View(lambda: self.r.bill(doc, tz)))

        periodo = Field(
            "periodo", m("field.periodo_bill"), lambda t: parse_int(m, t, minimum=0), required=False, default=0
        )
        return self._ask([*self._f_whose(), periodo], submit)

    def _history(self) -> Any:
        m = self.m
        fields = [
            *self._f_whose(),
            self._f_choice("kind", "field.kind", KIND, default=KIND.default),
            Field("periodo", m("field.periodo_hist"), lambda t: parse_int(m, t, minimum=0), required=False, default=0),
            Field("meter", m("field.meter"), lambda t: parse_int(m, t, minimum=1), required=False),
        ]

        def submit(v: dict[str, Any]) -> Deferred[View]:
            assert self.client is not None
            tz = self._shown_zone()
            d = self.client.history(self._whose(v), v["kind"], v["periodo"], id_medidor=v["meter"])
            return d.addCallback(lambda doc: View(lambda: self.r.history(doc, tz)))

        return self._ask(fields, submit)

    def _alarms(self) -> Any:
        def submit(v: dict[str, Any]) -> Deferred[View]:
            assert self.client is not None
            cid, tz = self._whose(v), self._shown_zone()

            def shown(doc: dict[str, Any]) -> View:
                if self.poller is not None and cid == self.customer:
                    self.poller.remember(doc)
                return View(lambda: self.r.alarms(doc, tz))

            return self.client.alarms(cid).addCallback(shown)

        return self._ask(self._f_whose(), submit)

    def _ack(self) -> Any:
        m = self.m

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            d = self.client.ack_alarm(self._whose(v), v["alarm_id"])
            return d.addCallback(lambda doc: m("result.acked", alarm_id=doc.get("alarm_id", v["alarm_id"])))

        alarm = Field("alarm_id", m("field.alarm_id"), lambda t: parse_int(m, t, minimum=1))
        return self._ask([*self._f_whose(), alarm], submit)

    # -- the operator's management: find, look, change, retire, replace, audit --

    def _enter_manage(self) -> None:
        self.state = "manage"

    def _leave_manage(self) -> None:
        self.state = "operator"

    def _page_size(self) -> int:
        """Results per page: what fits the screen with its table's lines, at most 20."""
        rows = self.r.height
        return 20 if rows is None else max(3, min(20, rows - 9))

    def _paged(self, fetch: Callable[[str | None], Deferred[dict[str, Any]]], draw: Callable[[dict[str, Any]], str]) -> Deferred[View]:
        """The first page of a list; while there are more, option m shows the next."""

        def shown(doc: dict[str, Any]) -> View:
            cursor = doc.get("cursor")
            if cursor:
                self._more = lambda: fetch(cursor).addCallback(shown)
            return View(lambda: draw(doc))

        return fetch(None).addCallback(shown)

    def _search(self) -> Any:
        m = self.m

        def submit(v: dict[str, Any]) -> Deferred[View]:
            client = self.client
            assert client is not None
            return self._paged(
                lambda cursor: client.search_customers(v["q"], cursor=cursor, limite=self._page_size()),
                lambda doc: self.r.search(doc, m("page.more_menu")),
            )

        return self._ask([Field("q", m("field.query"), lambda t: parse_text(m, t))], submit)

    def _record(self) -> Any:
        def submit(v: dict[str, Any]) -> Deferred[View]:
            assert self.client is not None
            return self.client.customer(v["id"]).addCallback(lambda doc: View(lambda: self.r.record(doc)))

        return self._ask([self._f_customer()], submit)

    def _update(self) -> Any:
        m = self.m
        fields = [
            self._f_customer(),
            Field("name", m("field.new_name"), str.strip, required=False),
            self._f_choice("ligacao", "field.new_ligacao", LIGACAO),
            Field("tz", m("field.new_tz"), str.strip, required=False),
            Field("limite_kw", m("field.new_limite_kw"), lambda t: parse_positive_number(m, t), required=False),
            Field("limite_kwh", m("field.new_limite_kwh"), lambda t: parse_positive_number(m, t), required=False),
        ]

        def submit(v: dict[str, Any]) -> Deferred[str] | str:
            assert self.client is not None
            changes = {name: v[name] for name in ("name", "ligacao", "tz", "limite_kw", "limite_kwh")}
            if all(value is None for value in changes.values()):
                return m("result.nothing_to_change")
            return self.client.update_customer(v["id"], **changes).addCallback(self.r.updated)

        self.out.show(m("menu.cancel_hint") + "\n")
        return self._ask(fields, submit)

    def _when(self, key: str) -> Field:
        """An instant, now when left empty."""
        return Field("when", self.m(key), lambda t: parse_when(self.m, t), required=False)

    def _retire(self) -> Any:
        m = self.m
        fields = [
            self._f_customer(),
            Field("meter", m("field.meter_to_retire"), lambda t: parse_int(m, t, minimum=1)),
            Field("valor", m("field.final_kwh"), lambda t: parse_kwh(m, t)),
            self._when("field.when_read"),
        ]

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            when = self.clock.seconds() if v["when"] is None else v["when"]
            return self.client.retire_meter(v["id"], v["meter"], v["valor"], when).addCallback(self.r.retired)

        self.out.show(m("menu.cancel_hint") + "\n")
        return self._ask(fields, submit)

    def _replace(self) -> Any:
        m = self.m
        fields = [
            self._f_customer(),
            Field("meter", m("field.meter_to_replace"), lambda t: parse_int(m, t, minimum=1)),
            Field("valor", m("field.initial_kwh"), lambda t: parse_kwh(m, t), required=False, default="0"),
            self._when("field.when_installed"),
            self._f_choice("mode", "field.new_meter_mode", METER_MODE),
        ]

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            when = self.clock.seconds() if v["when"] is None else v["when"]
            d = self.client.replace_meter(v["id"], v["meter"], v["valor"], when, mode=v["mode"])
            return d.addCallback(self.r.replaced)

        self.out.show(m("menu.cancel_hint") + "\n")
        return self._ask(fields, submit)

    def _audit(self) -> Any:
        m = self.m

        def submit(v: dict[str, Any]) -> Deferred[View]:
            client = self.client
            assert client is not None
            return self._paged(
                lambda cursor: client.audit(v["id"], cursor=cursor, limite=max(3, self._page_size() // 2)),  # two lines an entry
                lambda doc: self.r.audit(doc, m("page.more_menu")),
            )

        return self._ask([Field("id", m("field.customer_or_all"), lambda t: parse_taxid(m, t), required=False)], submit)

    def _export(self) -> Any:
        """A customer's readings or history of a calendar period into a CSV file (``exportar`` asks more)."""
        m = self.m
        fields = [
            *self._f_whose(),
            self._f_choice("what", "field.export_what", EXPORT, default=EXPORT.default),
            Field("kind", m("field.export_kind"), lambda t: parse_choice(m, KIND, t), required=False, default="M"),
            Field("periodo", m("field.periodo_hist"), lambda t: parse_int(m, t, minimum=0), required=False, default=0),
            Field("meter", m("field.meter"), lambda t: parse_int(m, t, minimum=1), required=False),
            Field("file", m("field.export_file"), str.strip, required=False),
        ]

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            path = "/getConsumoHist" if v["what"] == "historico" else "/getLeituras"
            query = {"id": self._whose(v), "kind": v["kind"], "periodo": v["periodo"], "id_medidor": v["meter"]}
            receiver = ExportFile(v["file"])

            def written(_: object) -> str:
                size = m.number(round(receiver.size / 1_000_000, 1))
                return m("export.done", path=str(receiver.finish()), rows=receiver.rows, size=size)

            def failed(failure: Failure) -> Failure | str:
                receiver.abandon()
                error = failure.value
                if isinstance(error, OSError):
                    return m("export.cannot_write", path=str(receiver.path or v["file"]), reason=error.strerror or str(error))
                return failure

            return self.client.download(path, query, receiver).addCallbacks(written, failed)

        self.out.show(m("menu.cancel_hint") + "\n")
        return self._ask(fields, submit)
