"""The compliance console: a server-rendered web page at /audit/ behind SMART sign-in.

session.py       the sign-in (authorization code + PKCE with a built-in public client) and
                 the sealed session cookie
router.py        the pages and the accounting of disclosures endpoint
facts.py         the key facts of an AuditEvent
verification.py  the chain verification status, computed on a thread and kept for a minute
"""

from __future__ import annotations

from starlette.routing import Route


def routes() -> list[Route]:
    """The console's routes (imported when asked for: audit.web.facts stays light)."""
    from audit.web.router import routes as console_routes

    return console_routes()
