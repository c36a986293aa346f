"""The login page: a customer logs in with CPF/CNPJ and token, the operator with the operator token.

Two plain POST forms, so logging in needs no script. Both carry a CSRF token
bound to a pre-login cookie (see :mod:`meterd.portal.csrf`), so another site
cannot log a visitor into an account of its choosing.
"""

from __future__ import annotations

from twisted.web.template import Flattenable, tags

from meterd.portal import routes
from meterd.portal.layout import PortalPage, csrf_field, field

__all__ = ["LoginPage"]


class LoginPage(PortalPage):
    """``data``: optional ``id`` (the CPF/CNPJ typed before, shown again);
    optional ``error``: ``"failed"`` (wrong id or token), ``"expired"`` (the
    form's CSRF token did not match) or ``"throttled"``, with ``retry_after``
    (whole seconds) for the latter; optional ``form`` (``"customer"`` or
    ``"operator"``: which form the error belongs to); optional ``next`` (the
    portal page to go to once logged in). Each form also carries the page's
    language, so the login session starts in it."""

    page_class = "page page-login"

    def title(self) -> str:
        return self.fmt.t("login.title")

    def main(self) -> Flattenable:
        t, d = self.fmt.t, self.data
        error = d.get("error")
        message = None
        if error == "failed":
            message = t("login.failed")
        elif error == "expired":
            message = t("login.expired")
        elif error == "throttled":
            message = t("login.throttled", seconds=int(d.get("retry_after", 0)))
        which = d.get("form", "customer")
        carried = [tags.input(type="hidden", name="lang", value=self.fmt.lang)]
        if d.get("next"):
            carried.append(tags.input(type="hidden", name="next", value=d["next"]))

        def alert(form: str) -> list[Flattenable]:
            return [tags.p(message, class_="error-box", role="alert")] if message and which == form else []

        customer = tags.section(
            tags.h2(t("login.customer"), id="login-customer"),
            *alert("customer"),
            tags.form(
                csrf_field(self.ctx),
                *carried,
                field(
                    "id", t("login.taxid"), value=d.get("id"), required=True, autocomplete="username", inputmode="numeric", hint=t("login.taxid_hint")
                ),
                field("token", t("login.token"), type="password", required=True, autocomplete="current-password", hint=t("login.token_hint")),
                tags.button(t("login.submit"), type="submit", class_="button"),
                method="post",
                action=routes.LOGIN,
            ),
            class_="card",
            **{"aria-labelledby": "login-customer"},
        )
        operator = tags.section(
            tags.h2(t("login.operator"), id="login-operator"),
            *alert("operator"),
            tags.form(
                csrf_field(self.ctx),
                *carried,
                field(
                    "operator_token",
                    t("login.operator_token"),
                    type="password",
                    required=True,
                    autocomplete="current-password",
                    hint=t("login.operator_hint"),
                ),
                tags.button(t("login.submit"), type="submit", class_="button secondary"),
                method="post",
                action=routes.LOGIN_STAFF,
            ),
            class_="card",
            **{"aria-labelledby": "login-operator"},
        )
        return [tags.h1(t("login.heading")), tags.p(t("login.lede"), class_="lede"), tags.div(customer, operator, class_="login-grid")]
