"""Who is calling (``Principal``), what each role may do, and which sites it sees.

One table maps the permission a route declares (vna.web) to the roles allowed.
Slide routes declare READ like the DICOMweb ones; reading slides is also a
pathologist's privilege, so READ on a slide route is checked as ``SLIDES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from vna.errors import BadRequest
from vna.web import ADMIN, DELETE, PUBLIC, READ, STORE

# permissions vna.auth adds to those of vna.web
AUDIT = "audit"  # the audit trail
AUTHENTICATED = "authenticated"  # anyone signed in, whatever the role
SLIDES = "slides"  # READ on a slide route
SHARE = "share"  # the routes of a share session (its info, its download)

ADMIN_ROLE, CLINICIAN, PATHOLOGIST, UPLOADER, AUDITOR = (
    "admin", "clinician", "pathologist", "uploader", "auditor",
)  # fmt: skip
# a PACS or other system archiving into vna over DICOMweb: it stores, then searches
# and retrieves what it stored (Orthanc's DICOMweb client does all three), without
# the administrator's DELETE and configuration rights
PACS = "pacs"
ROLES = (ADMIN_ROLE, CLINICIAN, PATHOLOGIST, UPLOADER, AUDITOR, PACS)
# the role of a share link's visitor: never a user's, and limited to what was shared
SHARE_ROLE = "share"
# who may make share links (slides also need the SLIDES permission)
SHARERS = frozenset({ADMIN_ROLE, CLINICIAN, PATHOLOGIST})

PERMISSION_ROLES: dict[str, frozenset[str]] = {
    READ: frozenset({ADMIN_ROLE, CLINICIAN, PATHOLOGIST, PACS}),
    SLIDES: frozenset({ADMIN_ROLE, PATHOLOGIST}),
    STORE: frozenset({ADMIN_ROLE, UPLOADER, PACS}),
    DELETE: frozenset({ADMIN_ROLE}),
    ADMIN: frozenset({ADMIN_ROLE}),
    AUDIT: frozenset({ADMIN_ROLE, AUDITOR}),
    AUTHENTICATED: frozenset(ROLES),
    SHARE: frozenset({SHARE_ROLE}),
}
SLIDE_PREFIXES = ("/slides", "/iiif/")


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # user | key | token | dev | ae | share
    name: str  # user name, key id, token subject, AE title, share id
    role: str
    sites: tuple[str, ...] | None = None  # None: every site
    csrf: str = ""  # set when authenticated by a session cookie
    share: Any = None  # kind "share": its vna.index.shares.ShareRecord (what it may reach)

    @property
    def store_site(self) -> str | None:
        """The site stamped on what this principal stores: its first granted site."""
        return self.sites[0] if self.sites else None


DEV = Principal("dev", "dev", ADMIN_ROLE)
PRINCIPAL = web.RequestKey("principal", Principal)  # set by the route guard (vna.auth.guard)


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """What a declared route implies for access and audit, worked out once per route."""

    method: str
    path: str  # the route's pattern: '/dicom-web/studies/{study}'
    declared: str  # the permission as declared (vna.web.Route)
    permission: str  # the one enforced (effective_permission)
    view: str = ""  # what one request views, recorded once per window: "slide", "sop" or ""

    @property
    def slide(self) -> bool:
        return self.path.startswith(SLIDE_PREFIXES)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequest(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def effective_permission(permission: str, route_path: str) -> str:
    if permission == READ and route_path.startswith(SLIDE_PREFIXES):
        return SLIDES
    return permission


def allowed(principal: Principal, permission: str) -> bool:
    if permission == PUBLIC:
        return True
    return principal.role in PERMISSION_ROLES.get(permission, PERMISSION_ROLES[ADMIN])


def sites_of(site: str | None) -> tuple[str, ...] | None:
    """A stored ``site`` column ('a' or 'a,b'; NULL for every site) as a tuple."""
    if site is None or not site.strip():
        return None
    return tuple(s.strip() for s in site.split(",") if s.strip())


def principal_of(request: web.Request) -> Principal | None:
    return request.get(PRINCIPAL)


def scope_sites(request: web.Request) -> list[str] | None:
    """The sites the caller may see, for Query.sites / Archive.instances(sites=...);
    None means no restriction (dev mode, or a principal granted every site)."""
    p = principal_of(request)
    return None if p is None or p.sites is None else list(p.sites)


def store_site(request: web.Request) -> str | None:
    """The site to stamp on instances this request stores."""
    p = principal_of(request)
    return None if p is None else p.store_site
