"""The web portal: server-rendered pages for customers and staff.

Pure modules (no Twisted): ``fmt`` and ``catalog`` (Brazilian and English
formats, the page texts), ``charts`` (inline SVG bar charts), ``estimates``
(month-end projection and per-bucket cost), ``routes`` (the portal's URLs),
``sessions``, ``csrf`` and ``throttle`` (who is logged in, form tokens, login
back-off), ``sse`` (the Server-Sent Events wire format).

On ``twisted.web.template``: ``layout`` (the page shell and shared markup),
``customer_pages`` and ``staff_pages`` (one Element per page, each rendered
from the API's JSON answers) and ``static`` (the stylesheet and the script).
"""
