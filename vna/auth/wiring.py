"""``setup_security(app)``: the route guard, the login and audit routes, the token
verifier, and the audit writer.  Call it in create_app before adding any route:
add_routes wraps every handler in the guard set here."""

from __future__ import annotations

from aiohttp import web

from vna.audit.api import audit_routes
from vna.audit.trail import audit_ctx
from vna.auth.access import CREDENTIALS, VERIFIER
from vna.auth.credcache import CredentialCache
from vna.auth.credentials import TokenVerifier
from vna.auth.guard import make_guard
from vna.auth.login import login_routes
from vna.auth.oidc_login import oidc_routes
from vna.keys import INDEX, SETTINGS
from vna.web import ROUTE_GUARD, add_routes


def setup_security(app: web.Application) -> None:
    """Call after the cleanup context that opens the index: the audit writer
    needs it and must be drained before it closes."""
    verifier = TokenVerifier.from_settings(app[SETTINGS])  # bad OIDC settings fail here
    if verifier is not None:
        app[VERIFIER] = verifier
    app[CREDENTIALS] = CredentialCache(lambda: _credentials_epoch(app))
    app[ROUTE_GUARD] = make_guard(app)
    app.cleanup_ctx.append(audit_ctx)
    add_routes(app, login_routes() + oidc_routes() + audit_routes())


def _credentials_epoch(app: web.Application) -> bytes | None:
    index = app.get(INDEX)  # None before the archive is open: remember nothing
    return None if index is None else index.credentials_epoch()
