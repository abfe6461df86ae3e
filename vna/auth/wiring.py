"""``setup_security(app)``: the login and audit routes, the token verifier, and
the audit writer.  The two middlewares go in create_app's list, in this order:
``[cors, error, audit_middleware, auth_middleware]``."""

from __future__ import annotations

from aiohttp import web

from vna.audit.api import audit_routes
from vna.audit.middleware import audit_middleware
from vna.audit.trail import audit_ctx
from vna.auth.credentials import TokenVerifier
from vna.auth.login import login_routes
from vna.auth.middleware import VERIFIER, auth_middleware
from vna.auth.oidc_login import oidc_routes
from vna.keys import SETTINGS
from vna.web import add_routes

MIDDLEWARES = (audit_middleware, auth_middleware)


def setup_security(app: web.Application) -> None:
    """Call after the cleanup context that opens the index: the audit writer
    needs it and must be drained before it closes."""
    verifier = TokenVerifier.from_settings(app[SETTINGS])  # bad OIDC settings fail here
    if verifier is not None:
        app[VERIFIER] = verifier
    app.cleanup_ctx.append(audit_ctx)
    add_routes(app, login_routes() + oidc_routes() + audit_routes())
