"""The page shell every portal page shares, and the bits of markup pages reuse.

A page is a :class:`PortalPage`: a ``twisted.web.template`` Element built
from a :class:`PageContext` (language, who is looking, the CSRF token, this
page's URL) and a plain data dict (the API's JSON answers). It renders the
whole document: header with the utility's name, navigation, language switch
and logout; ``<main>``; the one stylesheet and the one deferred script.

Everything is built with ``twisted.web.template.tags``, so every text and
attribute is escaped when flattened. SVG from the pure modules (charts, the
Pix QR, the barcode) goes through :func:`svg`, which parses it and rebuilds it
as tags, so it is escaped the same way. There is no inline script or style
anywhere: :data:`SECURITY_HEADERS` forbids them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.template import Element, Flattenable, Tag, flattenString, tags

from meterd.portal import csrf, routes
from meterd.portal.fmt import LANGS, Fmt
from meterd.portal.sessions import Who

__all__ = [
    "CSP",
    "HTML_CONTENT_TYPE",
    "SECURITY_HEADERS",
    "PageContext",
    "PortalPage",
    "csrf_field",
    "field",
    "hidden_table",
    "render_bytes",
    "render_fragment",
    "scroll_region",
    "select_field",
    "svg",
]

#: Scripts, styles, images and fetches only from meterd itself; no inline
#: script or style; no framing (clickjacking).
CSP: Final = "default-src 'self'; frame-ancestors 'none'"
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
HTML_CONTENT_TYPE: Final = "text/html; charset=utf-8"

_HTML_LANG: Final = {"pt": "pt-BR", "en": "en"}
_LANG_NAMES: Final = {"pt": "Português", "en": "English"}


@dataclass(frozen=True)
class PageContext:
    """What every page needs besides its data.

    ``url`` is this page's path and query (the language switch links to it
    with another ``lang``); ``who`` is None on the login page; ``csrf`` the
    token for this login session's POST forms; ``utility`` the name in the header
    (the tariff's ``[empresa] nome``); ``viewing`` the customer an operator is
    looking at through the customer pages, whose id their links then carry.
    """

    fmt: Fmt
    url: str
    who: Who | None = None
    csrf: str | None = None
    utility: str = "meterd"
    viewing: str | None = None

    def link(self, path: str, **params: str | int | None) -> str:
        """A link to a customer page, carrying the customer's id when the operator looks."""
        return routes.href(path, **params, id=self.viewing)


def svg(markup: str, **attributes: str) -> Tag:
    """An SVG string (a chart, the Pix QR, the barcode) as tags for a template.

    Parsed and rebuilt element by element, so its texts are escaped again on
    output like any other; a malformed SVG raises here instead of breaking
    the page. Namespaces are dropped (HTML parses inline ``<svg>`` into the
    SVG namespace by itself) except the root's ``xmlns``.
    """
    root = ET.fromstring(markup)

    def build(element: ET.Element) -> Tag:
        attributes: dict[bytes | str, Flattenable] = {_local(k): v for k, v in element.attrib.items()}
        tag = Tag(_local(element.tag), attributes=attributes)
        if element.text:
            tag(element.text)
        for child in element:
            tag(build(child))
            if child.tail:
                tag(child.tail)
        return tag

    tag = build(root)
    tag.attributes["xmlns"] = "http://www.w3.org/2000/svg"
    tag.attributes.update(attributes)
    return tag


def _local(name: str) -> str:
    return name.rpartition("}")[2]


def csrf_field(ctx: PageContext) -> Tag:
    """The hidden CSRF input of a POST form."""
    if ctx.csrf is None:
        raise ValueError("a POST form needs the login session's CSRF token")
    return tags.input(type="hidden", name=csrf.FIELD, value=ctx.csrf)


def _described(name: str, hint: str | None, error: str | None) -> tuple[dict[str, str], list[Tag]]:
    """The aria attributes and the hint/error paragraphs of a form field."""
    ids, extra = [], []
    if hint:
        ids.append(f"f-{name}-hint")
        extra.append(tags.p(hint, id=f"f-{name}-hint", class_="hint"))
    if error:
        ids.append(f"f-{name}-error")
        extra.append(tags.p(error, id=f"f-{name}-error", class_="error"))
    attrs = {"aria-describedby": " ".join(ids)} if ids else {}
    if error:
        attrs["aria-invalid"] = "true"
    return attrs, extra


def field(
    name: str,
    label: str,
    *,
    value: str | None = None,
    type: str = "text",
    hint: str | None = None,
    error: str | None = None,
    required: bool = False,
    **attrs: str,
) -> Tag:
    """A labelled input with its hint and error, tied together for screen readers."""
    aria, extra = _described(name, hint, error)
    attributes: dict[bytes | str, Flattenable] = {"id": f"f-{name}", "name": name, "type": type}
    attributes.update(aria)
    attributes.update(attrs)
    if value is not None:
        attributes["value"] = value
    if required:
        attributes["required"] = "required"
    return tags.div(tags.label(label, for_=f"f-{name}"), Tag("input", attributes=attributes), *extra, class_="field")


def select_field(
    name: str,
    label: str,
    options: Sequence[tuple[str, str]],
    *,
    selected: str | None = None,
    hint: str | None = None,
    error: str | None = None,
) -> Tag:
    """A labelled ``<select>`` of (value, text) options."""
    aria, extra = _described(name, hint, error)
    choices = [tags.option(text, value=value, **({"selected": "selected"} if value == selected else {})) for value, text in options]
    return tags.div(
        tags.label(label, for_=f"f-{name}"),
        Tag("select", attributes={"id": f"f-{name}", "name": name, **aria})(*choices),  # type: ignore[dict-item]
        *extra,
        class_="field",
    )


def hidden_table(caption: str, headers: Sequence[str], rows: Sequence[Sequence[str]], table_id: str | None = None) -> Tag:
    """A data table that only screen readers see: the text alternative of a chart.

    The box that hides it is a div around it: a table is never narrower than
    its content, so a hidden table of its own would still widen a phone's page.
    """
    attrs: dict[bytes | str, Flattenable] = {}
    if table_id:
        attrs["id"] = table_id
    table = Tag("table", attributes=attrs)(
        tags.caption(caption),
        tags.thead(tags.tr(*(tags.th(h, scope="col") for h in headers))),
        tags.tbody(*(tags.tr(tags.th(row[0], scope="row"), *(tags.td(c) for c in row[1:])) for row in rows)),
    )
    return tags.div(table, class_="visually-hidden")


def scroll_region(content: Tag, label: str) -> Tag:
    """A wide table that scrolls sideways on a phone instead of widening the page.

    Focusable and labelled, so a keyboard user can scroll it too.
    """
    return tags.div(content, class_="table-scroll", tabindex="0", role="region", **{"aria-label": label})


def _nav(ctx: PageContext) -> Tag | str:
    t = ctx.fmt.t
    if ctx.who is None:
        return ""
    if ctx.who.kind == "operator" and ctx.viewing is None:
        items = [
            (routes.STAFF_SEARCH, t("nav.customers")),
            (routes.STAFF_NEW_CUSTOMER, t("nav.new_customer")),
            (routes.STAFF_NEW_METER, t("nav.new_meter")),
            (routes.STAFF_FLEET, t("nav.fleet")),
        ]
    else:
        items = [
            (routes.OVERVIEW, t("nav.overview")),
            (routes.HISTORY, t("nav.history")),
            (routes.BILL, t("nav.bill")),
            (routes.ALARMS, t("nav.alarms")),
        ]
    current = ctx.url.partition("?")[0]
    links = []
    if ctx.who.kind == "operator" and ctx.viewing is not None:  # the way back from the customer's pages
        links.append(tags.li(tags.a(t("nav.desk"), href=routes.href(routes.STAFF_CUSTOMER, id=ctx.viewing))))
    for path, text in items:
        attrs = {"aria-current": "page"} if path == current else {}
        target = path if ctx.who.kind == "operator" and ctx.viewing is None else ctx.link(path)
        links.append(tags.li(tags.a(text, href=target, **attrs)))
    return tags.nav(tags.ul(*links), class_="site-nav", **{"aria-label": t("nav.label")})


def _tools(ctx: PageContext) -> Tag:
    t = ctx.fmt.t
    languages = tags.ul(
        *(
            tags.li(
                tags.a(
                    _LANG_NAMES[lang],
                    href=routes.with_lang(ctx.url, lang),
                    lang=_HTML_LANG[lang],
                    hreflang=_HTML_LANG[lang],
                    **({"aria-current": "true"} if lang == ctx.fmt.lang else {}),
                )
            )
            for lang in LANGS
        ),
        class_="lang-switch",
        **{"aria-label": t("nav.language")},
    )
    parts: list[Tag] = [languages]
    if ctx.who is not None:
        parts.append(
            tags.form(
                csrf_field(ctx),
                tags.button(t("nav.logout"), type="submit", class_="link-button"),
                method="post",
                action=routes.LOGOUT,
                class_="logout",
            )
        )
    return tags.div(*parts, class_="site-tools")


def _document(ctx: PageContext, title: str, main: Flattenable, page_class: str) -> Tag:
    t = ctx.fmt.t
    subtitle = t("site.staff") if ctx.who is not None and ctx.who.kind == "operator" else t("site.customer")
    home = routes.STAFF_SEARCH if ctx.who is not None and ctx.who.kind == "operator" and ctx.viewing is None else ctx.link(routes.OVERVIEW)
    return tags.html(lang=_HTML_LANG[ctx.fmt.lang])(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.title(f"{title} · {ctx.utility}"),
            tags.link(rel="icon", href=routes.ICON, type="image/svg+xml"),
            tags.link(rel="stylesheet", href=routes.STYLESHEET),
            tags.script(src=routes.SCRIPT, defer="defer"),
        ),
        tags.body(class_=page_class)(
            tags.a(t("site.skip"), href="#main", class_="skip-link"),
            tags.header(
                tags.div(tags.a(ctx.utility, href=home, class_="brand-name"), tags.span(subtitle, class_="brand-sub"), class_="brand"),
                _nav(ctx),
                _tools(ctx),
                class_="site-header",
            ),
            Tag("main", attributes={"id": "main", "tabindex": "-1"})(main),
            tags.footer(tags.p(t("site.footer", utility=ctx.utility)), class_="site-footer"),
        ),
    )


class PortalPage(Element):
    """A whole portal page from a context and a data dict; subclasses say what it holds."""

    #: The ``<body>`` class: the stylesheet's hook for page-specific layout.
    page_class = "page"

    def __init__(self, ctx: PageContext, data: Mapping[str, Any]) -> None:
        super().__init__()
        self.ctx = ctx
        self.data = data
        self.fmt = ctx.fmt

    def title(self) -> str:
        raise NotImplementedError

    def main(self) -> Flattenable:
        raise NotImplementedError

    def render(self, request: IRequest | None) -> Tag:
        return _document(self.ctx, self.title(), self.main(), self.page_class)


def _flatten_now(thing: Flattenable | Element) -> bytes:
    """Flatten synchronously: portal markup never waits on a Deferred."""
    result: list[bytes] = []
    failures: list[Any] = []
    d: Deferred[bytes] = flattenString(None, thing)
    d.addCallbacks(result.append, failures.append)
    if failures:
        failures[0].raiseException()
    if not result:
        raise RuntimeError("portal markup waited on a Deferred")
    return result[0]


def render_bytes(page: PortalPage) -> bytes:
    """The page as a complete HTML document (UTF-8), doctype first."""
    return b"<!DOCTYPE html>\n" + _flatten_now(page)


def render_fragment(fragment: Flattenable) -> str:
    """A piece of markup (an alarm's list item for the live list) as a string."""
    return _flatten_now(fragment).decode("utf-8")
