"""Which form of an answer a client asked for: JSON (the default) or CSV.

``format=csv`` (query or body) decides; without it, the ``Accept`` header
does (``Accept: text/csv``). Accept is weighed as RFC 9110 says: the type
with the higher ``q`` wins, a type named exactly beats ``text/*``, which
beats ``*/*``; JSON wins what is left, as it does when nothing is asked. A
client that accepts neither still gets JSON: every error is JSON anyway.
Pure: no Twisted.
"""

from __future__ import annotations

from meterd.web import routes

FORMATS = ("json", "csv")
FORMAT = routes.choice(
    "format", "the answer's form: json, or csv (RFC 4180, UTF-8, a header row); `Accept: text/csv` also selects csv",
    FORMATS, fold=str.lower,
).optional()

_MEDIA = {"json": "application/json", "csv": "text/csv"}


def wants_csv(format: str | None, accept: str | None) -> bool:
    """Whether to answer CSV: ``format`` if given, else the Accept header."""
    if format is not None:
        return format == "csv"
    if not accept:
        return False
    csv = _preference(accept, _MEDIA["csv"])
    return csv[0] > 0 and csv > _preference(accept, _MEDIA["json"])


def _preference(accept: str, media: str) -> tuple[float, int]:
    """``(q, specificity)`` of ``media`` under ``accept``: the most specific range that matches it decides."""
    kind = media.split("/")[0]
    best = (0.0, -1)
    for item in accept.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        name = name.lower()
        specificity = 2 if name == media else 1 if name == f"{kind}/*" else 0 if name == "*/*" else -1
        if specificity < 0 or specificity < best[1]:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # NaN too
                    q = 0.0
        if specificity > best[1]:
            best = (q, specificity)
    return best if best[1] >= 0 else (0.0, -1)
