"""The page the portal answers with when it cannot show the one asked for: a
refusal (403, a form whose CSRF token did not match), something unknown
(404), a bad address (400), the server's trouble (500, 503).

It says what happened in the person's language, with the API's own reason
when there is one, and links back to the start; it is a whole portal page,
header and navigation included, so nobody is stranded on it.
"""

from __future__ import annotations

from twisted.web.template import Flattenable, tags

from clients.console.messages import CATALOG as CONSOLE_CATALOG
from meterd.portal import routes
from meterd.portal.fmt import Fmt
from meterd.portal.layout import PortalPage
from meterd.web.errors import ApiError

__all__ = ["MessagePage", "api_reason"]


def api_reason(fmt: Fmt, error: ApiError) -> str:
    """Why the API refused, in the page's language.

    The console already words every error code of the API for people, in
    both languages (``api.<code>``): the portal says the same, from the same
    catalog, and falls back to the API's own (English) message for a code
    neither knows yet.
    """
    return CONSOLE_CATALOG[fmt.lang].get(f"api.{error.code}", error.message)


class MessagePage(PortalPage):
    """``data``: ``status`` (the HTTP status, which names the title and the
    sentence); optional ``text`` (a sentence that replaces the status's own);
    optional ``detail`` (the reason, already in the page's language)."""

    page_class = "page page-message"

    def title(self) -> str:
        return self.fmt.t(f"error.title.{self.data['status']}")

    def main(self) -> Flattenable:
        t, d = self.fmt.t, self.data
        parts: list[Flattenable] = [tags.h1(self.title()), tags.p(d.get("text") or t(f"error.text.{d['status']}"), class_="lede")]
        if d.get("detail"):
            parts.append(tags.p(t("error.detail", detail=d["detail"]), class_="note"))
        who = self.ctx.who
        home = routes.STAFF_SEARCH if who is not None and who.kind == "operator" else routes.OVERVIEW
        parts.append(tags.p(tags.a(t("error.home"), href=home, class_="button secondary")))
        return parts
