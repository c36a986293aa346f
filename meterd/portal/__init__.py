"""The web portal: server-rendered pages for customers and staff, served by meterd on its HTTP port.

Pure modules (no Twisted): ``fmt`` and ``catalog`` (Brazilian and English
formats, the page texts), ``charts`` (inline SVG bar charts), ``estimates``
(month-end projection and per-bucket cost), ``routes`` (the portal's URLs),
``sessions``, ``csrf`` and ``throttle`` (who is logged in, form tokens, login
back-off), ``sse`` (the Server-Sent Events wire format), ``static`` (the
stylesheet, script and icon).

On ``twisted.web.template``: ``layout`` (the page shell and shared markup),
``customer_pages``, ``staff_pages``, ``login_page`` and ``message_page`` (one
Element per page, each rendered from the API's JSON answers).

The adapter on meterd's port: ``site`` (sessions, forms, access, answers),
``customer_views`` and ``staff_views`` (what each page asks the API, on behalf
of the login session), ``live`` (the open alarm pages' streams).
"""
