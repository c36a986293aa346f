"""meterd.portal.static: the stylesheet and script, as the package ships them (served: tests/test_portal_site.py)."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from meterd.portal import routes
from meterd.portal.static import ASSETS, load_assets


@pytest.mark.parametrize("name", list(ASSETS))
def test_asset_is_the_shipped_file_with_its_type_and_an_etag_it_is_revalidated_by(name: str) -> None:
    asset = load_assets()[name]
    shipped = (resources.files("meterd.portal") / "static" / name).read_bytes()
    assert asset.body == shipped and shipped
    assert asset.content_type == ASSETS[name]
    headers = asset.headers()
    assert headers["Cache-Control"] == "no-cache" and headers["X-Content-Type-Options"] == "nosniff"
    etag = headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert asset.fresh(etag) and asset.fresh(f'"0000", {etag}')
    assert not asset.fresh('"0000"') and not asset.fresh(None) and not asset.fresh("")
    other = load_assets()[next(n for n in ASSETS if n != name)]
    assert not asset.fresh(other.etag)


def test_routes_name_the_shipped_files() -> None:
    assert {path.rpartition("/")[2] for path in (routes.STYLESHEET, routes.SCRIPT, routes.ICON)} == set(ASSETS)


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
