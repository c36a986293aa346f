"""The operator's routes for alarm webhooks: register, list, remove (delivery itself: :mod:`meterd.webhooks`)."""

from __future__ import annotations

from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from twisted.logger import Logger

from meterd import credentials, periods
from meterd.metrics import WEBHOOK_BACKLOG_CAP
from meterd.readings import InvalidField
from meterd.store.base import NotFound, Webhook
from meterd.web import routes
from meterd.web.api import ID, MAX_CURSOR, Api, Call
from meterd.web.errors import not_found
from meterd.web.routes import Field, route
from meterd.webhook_wire import MAX_URL_LENGTH, InvalidUrl, check_url, origin
from meterd.webhooks import Delivery, Webhooks

__all__ = ["WebhookRoutes"]

log = Logger()


def _url(name: str, value: Any) -> str:
    try:
        return check_url(value)
    except InvalidUrl as e:
        raise InvalidField("invalid_url", str(e)) from None


_URL_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_URL_LENGTH, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^@#\\s]+$",
               "example": "https://alarmes.example.com/meterd"}
URL = Field("url", "where alarm events are POSTed: http:// or https://, printable ASCII, no user name, password or #fragment",
            _url, _URL_SCHEMA, _URL_SCHEMA)
WEBHOOK = routes.integer("webhook_id", "the webhook, as /cadWebhook numbered it", minimum=1, maximum=MAX_CURSOR)


_ISO = {"type": "string", "format": "date-time", "description": "ISO 8601 time with the server's (--tz) offset"}
_CUSTOMER = {"type": "string", "nullable": True, "description": "the customer whose events it gets; null: every customer's"}

#: The answers' schemas in ``/openapi.json`` (``additionalProperties: false``: the tests hold live answers to them field by field).
SCHEMAS: dict[str, Any] = {
    "WebhookCreated": {
        "type": "object",
        "required": ["webhook_id", "url", "id", "cursor", "secret"],
        "additionalProperties": False,
        "properties": {
            "webhook_id": {"type": "integer", "minimum": 1},
            "url": {"type": "string"},
            "id": _CUSTOMER,
            "cursor": {"type": "integer", "minimum": 0, "description": "the last event id before it: it gets the events after"},
            "secret": {
                "type": "string", "pattern": "^whsec_[0-9a-f]{64}$",
                "description": "the HMAC-SHA256 key of its signatures (the whole string, as UTF-8); shown only now",
            },
        },
    },
    "Webhooks": {
        "type": "object",
        "required": ["webhooks"],
        "additionalProperties": False,
        "properties": {"webhooks": {"type": "array", "items": {"$ref": "#/components/schemas/Webhook"}}},
    },
    "Webhook": {
        "type": "object",
        "required": [
            "webhook_id", "url", "id", "created", "cursor", "backlog", "last_success", "last_failure", "last_error", "failures", "delivered_by",
        ],
        "additionalProperties": False,
        "properties": {
            "webhook_id": {"type": "integer", "minimum": 1},
            "url": {"type": "string"},
            "id": _CUSTOMER,
            "created": _ISO,
            "cursor": {"type": "integer", "minimum": 0, "description": "the last event id delivered"},
            "backlog": {"type": "integer", "minimum": 0, "description": f"events not yet delivered (counted up to {WEBHOOK_BACKLOG_CAP:,})"},
            "last_success": {**_ISO, "nullable": True, "description": "the last delivery answered 2xx (server clock)"},
            "last_failure": {**_ISO, "nullable": True, "description": "the last failed attempt (server clock)"},
            "last_error": {
                "type": "string", "nullable": True, "description": "what that attempt got: `HTTP 500`, `timeout`, `connection refused`...",
            },
            "failures": {"type": "integer", "minimum": 0, "description": "failed attempts in a row (0 once one succeeds)"},
            "delivered_by": {"type": "string", "nullable": True, "description": "the meterd process holding its lease (host:pid:tag), if any"},
        },
    },
}


class WebhookRoutes:
    """``/cadWebhook``, ``/getWebhooks``, ``/removeWebhook`` (operator only)."""

    tags: ClassVar[list[dict[str, str]]] = [{"name": "webhooks", "description": "operator: alarm events POSTed to other systems"}]
    schemas: ClassVar[dict[str, Any]] = SCHEMAS

    def __init__(self, api: Api, webhooks: Webhooks) -> None:
        self.api = api
        self.webhooks = webhooks

    @route(
        "POST", "/cadWebhook", "operator",
        URL,
        ID.optional(description="only this customer's alarm events (default: every customer's)"),
        summary="Register an alarm webhook (operator token)",
        description=(
            "Every alarm event committed from now on (raised, cleared, acked) is POSTed to `url` as JSON, in event order,"
            " at least once, signed with HMAC-SHA256 in the `Meterd-Signature` header (`t=<unix seconds>,v1=<hex>`"
            " over `<t>.<body>`) with the `secret` returned here, shown once. `Meterd-Delivery` stays the same on every"
            " retry of an event. A failure (connection error, timeout, not 2xx) is retried with exponential backoff."
        ),
        tag="webhooks", ok=((201, "registered", "WebhookCreated"),), errors=(404, 503),
    )
    async def register(self, call: Call) -> tuple[int, dict[str, Any]]:
        url, cid = call.args["url"], call.args["id"]
        if cid is not None:
            await self.api.customer(cid)
        try:
            webhook = await self.api.store.create_webhook(url, cid, credentials.new_webhook_secret(), self.api.now_ms())
        except NotFound:
            raise not_found("unknown_customer", f"customer {cid} is not registered") from None
        log.info("registered webhook {id} to {url} for {whom}", id=webhook.webhook_id, url=origin(url), whom=cid or "every customer")
        self.webhooks.poke()
        return 201, {"webhook_id": webhook.webhook_id, "url": url, "id": cid, "cursor": webhook.last_delivered, "secret": webhook.secret}

    @route(
        "GET", "/getWebhooks", "operator",
        summary="The alarm webhooks and how their delivery goes (operator token)",
        description=(
            "A JSON object listing every webhook not removed with its URL and, per webhook: its cursor (the last event id"
            " delivered), its backlog (events not yet delivered, counted up to"
            f" {WEBHOOK_BACKLOG_CAP:,}), the last success, the last failure and its error, the failed attempts in a row,"
            " and which meterd process delivers it. The secret is never shown again."
        ),
        tag="webhooks", ok=((200, "the webhooks", "Webhooks"),), errors=(503,),
    )
    async def listed(self, call: Call) -> tuple[int, dict[str, Any]]:
        stored = await self.api.store.webhooks()
        return 200, {"webhooks": await self._shown(stored)}

    @route(
        "POST", "/removeWebhook", "operator",
        WEBHOOK,
        summary="Remove an alarm webhook (operator token)",
        description="Nothing more is sent to it from this answer on (an attempt in flight may still arrive). Answers the webhook as it was.",
        tag="webhooks", ok=((200, "removed", "Webhook"),), errors=(404, 503),
    )
    async def remove(self, call: Call) -> tuple[int, dict[str, Any]]:
        webhook_id = call.args["webhook_id"]
        try:
            webhook = await self.api.store.remove_webhook(webhook_id, self.api.now_ms())
        except NotFound:
            raise not_found("unknown_webhook", f"there is no webhook {webhook_id}") from None
        (shown,) = await self._shown([webhook])
        self.webhooks.removed(webhook_id)
        log.info("removed webhook {id} ({url})", id=webhook_id, url=origin(webhook.url))
        return 200, shown

    async def _shown(self, stored: list[Webhook]) -> list[dict[str, Any]]:
        """Each webhook as the operator sees it: a loop of this process knows its progress better than the store."""
        held: list[Delivery | None] = [self.webhooks.deliveries.get(w.webhook_id) for w in stored]
        cursors = [w.last_delivered if d is None else d.cursor for w, d in zip(stored, held)]
        backlogs = await self.api.store.webhook_backlogs([(w.customer_id, c) for w, c in zip(stored, cursors)], WEBHOOK_BACKLOG_CAP)
        tz = ZoneInfo(self.api.settings.tz)

        def at(ms: int | None) -> str | None:
            return None if ms is None else periods.iso(ms, tz)

        shown = []
        for webhook, delivery, cursor, backlog in zip(stored, held, cursors, backlogs):
            state: Webhook | Delivery = webhook if delivery is None else delivery
            shown.append({
                "webhook_id": webhook.webhook_id,
                "url": webhook.url,
                "id": webhook.customer_id,
                "created": at(webhook.created_ms),
                "cursor": cursor,
                "backlog": backlog,
                "last_success": at(state.last_success_ms),
                "last_failure": at(state.last_failure_ms),
                "last_error": state.last_error,
                "failures": state.failures,
                "delivered_by": self.webhooks.owner if delivery is not None else webhook.lease_owner,
            })
        return shown
