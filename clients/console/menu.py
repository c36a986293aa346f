"""The interactive console's state machine and its alarm poller.

The menu knows nothing about terminals: it receives whole lines through
:meth:`Menu.feed` and talks back through an :class:`Output` (show a block,
show a prompt, interrupt with a notification, quit). That keeps it drivable
from a ``StringTransport`` in tests and from either the plain line frontend
(pipes) or the line-editing terminal frontend.

Lines that arrive while a request is in flight are queued, not dropped, so a
script piped into stdin works exactly like a person typing slowly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from clients.api import ApiError, MeterdClient, ServerUnreachable

from .messages import Messages
from .render import Renderer

__all__ = ["Output", "Menu", "AlarmPoller", "Invalid", "describe_error", "parse_taxid"]

log = Logger()


class Output(Protocol):
    def show(self, text: str) -> None: ...
    def prompt(self, text: str) -> None: ...
    def notify(self, text: str) -> None: ...
    def quit(self) -> None: ...


class Invalid(Exception):
    """A field value refused before anything is sent; the text is localized."""


def describe_error(err: BaseException, m: Messages) -> str:
    """One readable line for any failure: people get no tracebacks."""
    if isinstance(err, Invalid):
        return str(err)
    if isinstance(err, ServerUnreachable):
        return m("error.unreachable", message=err.message)
    if isinstance(err, ApiError):
        if err.status == 501 or err.code == "not_implemented":
            return m("error.not_implemented", message=err.message or err.code)
        return m("error.api", status=err.status, code=err.code, message=err.message)
    return m("error.unexpected", message=f"{type(err).__name__}: {err}")


# -- field parsers ------------------------------------------------------------


def parse_taxid(m: Messages, text: str) -> str:
    from meterd.taxid import InvalidTaxId, normalize

    try:
        return normalize(text)
    except InvalidTaxId as e:
        digits = "".join(ch for ch in text if ch.isdigit())
        raise Invalid(m(f"invalid.taxid.{e.reason}", n=len(digits))) from None


def _int(m: Messages, text: str, *, minimum: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        key = "invalid.positive_int" if minimum > 0 else "invalid.integer"
        raise Invalid(m(key, value=text)) from None
    if value < minimum:
        if minimum > 0:
            raise Invalid(m("invalid.positive_int", value=text))
        raise Invalid(m("invalid.nonnegative"))
    return value


def _positive_number(m: Messages, text: str) -> float | int:
    """Accept the decimal comma people type in Brazil as well as the point."""
    raw = text.strip().replace(",", ".")
    try:
        d = Decimal(raw)
    except InvalidOperation:
        raise Invalid(m("invalid.number", value=text)) from None
    if not d.is_finite() or d <= 0:
        raise Invalid(m("invalid.number", value=text))
    return int(d) if d == d.to_integral_value() else float(d)


def _choice(m: Messages, text: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    value = text.strip().upper() if upper else text.strip().lower()
    if value not in choices:
        raise Invalid(m("invalid.choice", choices=", ".join(choices)))
    return value


# -- forms --------------------------------------------------------------------


@dataclass
class Field:
    name: str
    prompt: str  # catalog key
    parse: Callable[[str], Any]
    required: bool = True
    default: Any = None


@dataclass
class Form:
    fields: list[Field]
    submit: Callable[[dict[str, Any]], Any]  # returns str, Deferred[str] or None
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
        self.state = "mode"
        self.form: Form | None = None
        self.client: MeterdClient | None = None
        self.customer: str | None = None
        self.tz: str | None = None
        self.poller: AlarmPoller | None = None
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

    def _settle(self, result: Any) -> None:
        """After a handler: wait for its request (lines queue meanwhile), else show what comes next."""
        if isinstance(result, Deferred):
            self._busy = True
            result.addErrback(self._report)
            result.addBoth(self._idle)
        else:
            self._after()

    def feed(self, line: str) -> None:
        if self._done:
            return
        self._queue.append(line.rstrip("\r\n"))
        self._drain()

    def eof(self) -> None:
        """stdin closed: finish what was queued, then leave."""
        self._eof = True
        self._maybe_finish()

    def _drain(self) -> None:
        while self._queue and not self._busy and not self._done:
            line = self._queue.pop(0)
            try:
                result = self._handle(line)
            except Exception as e:  # a bug must not kill the console
                log.failure("menu handler failed")
                self.out.show(describe_error(e, self.m) + "\n")
                result = None
            self._settle(result)
            if self._busy:
                return
        self._maybe_finish()

    def _idle(self, _: Any) -> None:
        self._busy = False
        if not self._done:
            self._after()
            self._drain()

    def _report(self, failure: Failure) -> None:
        if not isinstance(failure.value, ApiError):
            log.failure("request failed", failure)
        self.out.show(describe_error(failure.value, self.m) + "\n")

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

    def _after(self) -> None:
        """Show what the user answers next: a form field or a menu."""
        if self._done or self._busy:
            return
        if self.form is not None:
            self.out.prompt(self.m(self.form.current.prompt))
            return
        if self.state == "operator":
            self.out.show(self.m("menu.operator") + "\n")
        elif self.state == "customer":
            self.out.show(self.m("menu.customer", id=self._shown_id()) + "\n")
        else:
            self.out.show(self.m("menu.mode") + "\n")
        self.out.prompt(self.m("prompt.choice"))

    def _shown_id(self) -> str:
        from meterd.taxid import format_taxid

        try:
            return format_taxid(self.customer or "")
        except ValueError:
            return self.customer or ""

    # -- dispatch -----------------------------------------------------------

    def _handle(self, line: str) -> Any:
        if self.form is not None:
            return self._form_input(line)
        choice = line.strip()
        if self.state == "mode":
            table = {"1": self._enter_operator, "2": self._begin_customer, "0": self._quit}
        elif self.state == "operator":
            table = {
                "1": self._register_customer,
                "2": self._register_meter,
                "3": self._list_meters,
                "9": self._switch_mode,
                "0": self._quit,
            }
        else:
            table = {
                "1": self._bill,
                "2": self._history,
                "3": self._alarms,
                "4": self._ack,
                "9": self._switch_mode,
                "0": self._quit,
            }
        action = table.get(choice)
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

        def shown(text: Any) -> None:
            if isinstance(text, str) and text:
                self.out.show(text if text.endswith("\n") else text + "\n")

        result.addCallback(shown)
        return result

    def _ask(self, fields: list[Field], submit: Callable[[dict[str, Any]], Any]) -> Any:
        """Start a form; a form with no fields submits at once."""
        self.form = Form([f for f in fields], submit)
        if not self.form.fields:
            self.form = None
            return self._submit(Form([], submit))
        return None

    # -- common fields ------------------------------------------------------

    def _f_customer(self) -> Field:
        return Field("id", "field.customer_id", lambda t: parse_taxid(self.m, t))

    # -- modes --------------------------------------------------------------

    def _enter_operator(self) -> Any:
        if self.operator_token:
            self._set_operator(self.operator_token)
            return None
        self.out.show(self.m("invalid.no_token") + "\n")

        def got(values: dict[str, Any]) -> None:
            self.operator_token = values["token"]
            self._set_operator(values["token"])

        return self._ask([Field("token", "field.token", str.strip)], got)

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
            fields.append(Field("token", "field.token", str.strip))
        return self._ask(fields, self._login_customer)

    def _login_customer(self, values: dict[str, Any]) -> Deferred[None]:
        """Check the token against the server before showing the menu; the
        answer also tells the customer's time zone for showing times."""
        cid = values.get("id") or parse_taxid(self.m, self.preset_customer or "")  # cli normalizes it
        token = values.get("token") or self.customer_token
        client = self.make_client(token)
        d = client.history(cid, "D", 0)

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

        d.addCallbacks(ok, failed)
        return d

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
            Field("name", "field.name", str.strip),
            Field("ligacao", "field.ligacao", lambda t: _choice(m, t, ("mono", "bi", "tri")), required=False),
            Field("limite_kw", "field.limite_kw", lambda t: _positive_number(m, t), required=False),
            Field("limite_kwh", "field.limite_kwh", lambda t: _positive_number(m, t), required=False),
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
        m = self.m
        fields = [
            self._f_customer(),
            Field("mode", "field.meter_mode", lambda t: _choice(m, t, ("register", "interval")), required=False),
        ]

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            return self.client.register_meter(v["id"], mode=v["mode"]).addCallback(self.r.meter_created)

        self.out.show(m("menu.cancel_hint") + "\n")
        return self._ask(fields, submit)

    def _list_meters(self) -> Any:
        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None
            return self.client.meters(v["id"]).addCallback(self.r.meters)

        return self._ask([self._f_customer()], submit)

    # -- customer actions ---------------------------------------------------

    def _bill(self) -> Any:
        m = self.m

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None and self.customer is not None
            return self.client.bill(self.customer, v["periodo"]).addCallback(self.r.bill, self.tz)

        return self._ask(
            [Field("periodo", "field.periodo_bill", lambda t: _int(m, t, minimum=0), required=False, default=0)],
            submit,
        )

    def _history(self) -> Any:
        m = self.m
        fields = [
            Field("kind", "field.kind", lambda t: _choice(m, t, ("D", "M", "Y"), upper=True), required=False, default="D"),
            Field("periodo", "field.periodo_hist", lambda t: _int(m, t, minimum=0), required=False, default=0),
            Field("meter", "field.meter", lambda t: _int(m, t, minimum=1), required=False),
        ]

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None and self.customer is not None
            d = self.client.history(self.customer, v["kind"], v["periodo"], id_medidor=v["meter"])
            return d.addCallback(self.r.history, self.tz)

        return self._ask(fields, submit)

    def _alarms(self) -> Any:
        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None and self.customer is not None
            d = self.client.alarms(self.customer)

            def shown(doc: dict[str, Any]) -> str:
                if self.poller is not None:
                    self.poller.remember(doc)
                return self.r.alarms(doc, self.tz)

            return d.addCallback(shown)

        return self._ask([], submit)

    def _ack(self) -> Any:
        m = self.m

        def submit(v: dict[str, Any]) -> Deferred[str]:
            assert self.client is not None and self.customer is not None
            d = self.client.ack_alarm(self.customer, v["alarm_id"])
            return d.addCallback(lambda doc: m("result.acked", alarm_id=doc.get("alarm_id", v["alarm_id"])))

        return self._ask([Field("alarm_id", "field.alarm_id", lambda t: _int(m, t, minimum=1))], submit)


class AlarmPoller:
    """Polls ``/getAlarme`` with the cursor and announces new raised/cleared events.

    The first answer only sets the baseline (old events are history, not news).
    A server that goes away is reported once; polling carries on and says so
    when it is back. Other errors (e.g. 501 before alarms exist) are reported
    once per error code, not every interval.
    """

    def __init__(
        self,
        client: MeterdClient,
        customer: str,
        *,
        clock: IReactorTime,
        interval: float,
        notify: Callable[[str], None],
        renderer: Renderer,
        msgs: Messages,
        tz: str | None = None,
    ) -> None:
        self.client = client
        self.customer = customer
        self.clock = clock
        self.interval = interval
        self.notify = notify
        self.r = renderer
        self.m = msgs
        self.tz = tz
        self.cursor: int | None = None
        self.alarms: dict[Any, dict[str, Any]] = {}
        self._down = False
        self._last_error: str | None = None
        self._call: LoopingCall | None = None
        self._inflight: Deferred[None] | None = None
        self._stopped = False
        self._seen: int | None = None  # highest event id already known

    def start(self) -> None:
        self._call = LoopingCall(self.poll)
        self._call.clock = self.clock
        self._call.start(self.interval, now=True)

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.running:
            self._call.stop()
        self._call = None
        if self._inflight is not None:
            self._inflight.cancel()

    def remember(self, doc: dict[str, Any]) -> None:
        for alarm in doc.get("active") or []:
            if isinstance(alarm, dict) and "alarm_id" in alarm:
                self.alarms[alarm["alarm_id"]] = alarm

    def poll(self) -> Deferred[None]:
        """One round; never fails, so the LoopingCall keeps running."""
        d = self.client.alarms(self.customer, self.cursor)
        d.addCallbacks(self._got, self._failed)
        self._inflight = d

        def clear(_: Any) -> None:
            self._inflight = None

        d.addBoth(clear)
        return d

    def _got(self, doc: dict[str, Any]) -> None:
        if self._stopped:
            return
        if self._down:
            self.notify(self.m("poll.back") + "\n")
        self._down = False
        self._last_error = None
        self.remember(doc)
        first = self._seen is None
        events = [e for e in doc.get("events") or [] if isinstance(e, dict)]
        ids = [e["event_id"] for e in events if isinstance(e.get("event_id"), int)]
        if first:
            active = [a for a in doc.get("active") or [] if not a.get("acked_at")]
            if active:
                self.notify(self.m("poll.active", n=len(active)) + "\n")
        else:
            # Event ids increase, so this also guards against a server that
            # ignores the cursor and repeats old events.
            for event in events:
                eid = event.get("event_id")
                if isinstance(eid, int) and eid <= (self._seen or 0):
                    continue
                text = self.r.banner(event, self.alarms.get(event.get("alarm_id")), self.tz)
                if text:
                    self.notify(text)
        self._seen = max([self._seen or 0, *ids])
        cursor = doc.get("cursor")
        if isinstance(cursor, int) and not isinstance(cursor, bool):
            self.cursor = cursor

    def _failed(self, failure: Failure) -> None:
        if self._stopped:
            return
        err = failure.value
        if isinstance(err, ServerUnreachable):
            if not self._down:
                self._down = True
                self.notify(self.m("poll.lost") + "\n")
            return
        code = getattr(err, "code", type(err).__name__)
        if code != self._last_error:
            self._last_error = code
            self.notify(self.m("poll.failed", error=describe_error(err, self.m)) + "\n")
