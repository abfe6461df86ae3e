"""Access control: who is calling (API keys, OIDC tokens, browser sessions), what
their role may do, and which sites they see.  Wiring is in vna.auth.wiring."""

from vna.auth.roles import PRINCIPAL, Principal, principal_of, scope_sites, store_site

__all__ = ["PRINCIPAL", "Principal", "principal_of", "scope_sites", "store_site"]
