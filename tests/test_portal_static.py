"""meterd.portal.static: the stylesheet and script, as the package ships them."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from meterd.portal import routes
from meterd.portal.static import ASSETS, static_resource


def _get(name: str, headers: dict[bytes, bytes] | None = None) -> DummyRequest:
    request = DummyRequest([name.encode()])
    for key, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(key, [value])
    resource = getChildForRequest(static_resource(), request)
    body = resource.render(request)
    request.write(body)
    return request


@pytest.mark.parametrize("name", list(ASSETS))
def test_asset_is_served_with_its_type_and_revalidated_by_etag(name: str) -> None:
    request = _get(name)
    shipped = (resources.files("meterd.portal") / "static" / name).read_bytes()
    assert b"".join(request.written) == shipped and shipped
    headers = request.responseHeaders
    assert headers.getRawHeaders(b"content-type") == [ASSETS[name]]
    assert headers.getRawHeaders(b"cache-control") == [b"no-cache"]
    assert headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]
    (etag,) = headers.getRawHeaders(b"etag")
    again = _get(name, {b"if-none-match": etag})
    assert again.responseCode == 304 and b"".join(again.written) == b""
    stale = _get(name, {b"if-none-match": b'"0000"'})
    assert stale.responseCode in (None, 200) and b"".join(stale.written) == shipped


def test_routes_name_the_shipped_files() -> None:
    assert {routes.STYLESHEET.rpartition("/")[2], routes.SCRIPT.rpartition("/")[2]} == set(ASSETS)


def test_stylesheet_prints_a4_and_script_has_no_eval() -> None:
    css = (resources.files("meterd.portal") / "static" / "portal.css").read_text()
    js = (resources.files("meterd.portal") / "static" / "portal.js").read_text()
    assert re.search(r"@page\s*\{[^}]*size:\s*A4", css)
    assert "@media print" in css
    assert "url(" not in css.replace("url(#", "")  # nothing fetched from elsewhere
    for forbidden in ("eval(", "new Function", "innerHTML", "document.write", "http://", "https://"):
        assert forbidden not in js, forbidden


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


# (text, background) pairs the stylesheet sets on text: custom properties or #hex.
TEXT_PAIRS = [
    ("--ink", "--page"), ("--ink", "#ffffff"), ("--muted", "--page"), ("--muted", "#ffffff"),
    ("#ffffff", "--brand"), ("#ffffff", "--brand-dark"), ("--brand", "#ffffff"), ("--brand-dark", "--brand-soft"),
    ("--ok", "--ok-soft"), ("--bad", "--bad-soft"), ("--bad", "#ffffff"), ("--ink", "--warn-soft"),
    ("--ink", "--bad-soft"), ("--muted", "--soft"),
]


def test_text_colours_meet_wcag_aa_contrast() -> None:
    css = (resources.files("meterd.portal") / "static" / "portal.css").read_text()
    root = re.search(r":root\s*\{([^}]*)\}", css)
    assert root is not None
    colours = {name: value.lower() for name, value in re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{6})", root.group(1))}
    for text, background in TEXT_PAIRS:
        fg, bg = colours.get(text, text), colours.get(background, background)
        assert _contrast(fg, bg) >= 4.5, (text, background, round(_contrast(fg, bg), 2))
