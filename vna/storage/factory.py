"""Build a blob store from a URL (the one place that knows the URL forms).

- ``/abs/path``, ``rel/path`` or ``file:///abs/path`` -> FileStore
- ``s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT&region=us-east-1[&part_size=N]``
  -> S3Store.  Credentials come from ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``), or the keyword
  arguments; never from the URL, so URLs can be logged.  Without ``endpoint``
  the store talks to AWS (``https://s3.REGION.amazonaws.com``).  ``secure``
  (TLS) follows the endpoint's scheme.

``make_store`` is synchronous and does no I/O; call ``await store.open()``
before first use (creates an S3 bucket if missing; harmless on a filesystem).
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qs, unquote, urlsplit

from vna.errors import BadRequest
from vna.storage.base import BlobStore, check_key
from vna.storage.fs import FileStore
from vna.storage.s3 import DEFAULT_PART_SIZE, S3Store

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_S3_PARAMS = {"endpoint", "region", "part_size"}


def make_store(
    url: str, *, access_key: str | None = None, secret_key: str | None = None
) -> BlobStore:
    """The store ``url`` names; BadRequest (with the reason) for a bad URL."""
    if not isinstance(url, str) or not url.strip():
        raise BadRequest("blob store URL is empty")
    url = url.strip()
    scheme = urlsplit(url).scheme.lower()
    if scheme == "s3":
        return _s3_store(url, access_key, secret_key)
    if scheme == "file":
        return FileStore(_file_path(url))
    if scheme and "://" in url:
        raise BadRequest(
            f"blob store URL {url!r}: unknown scheme {scheme!r} (use file:// or s3://)"
        )
    return FileStore(os.path.abspath(url))  # a plain path


def _file_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise BadRequest(f"blob store URL {url!r}: file URLs take no host (file:///abs/path)")
    if parts.query or parts.fragment:
        raise BadRequest(f"blob store URL {url!r}: file URLs take no query or fragment")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise BadRequest(f"blob store URL {url!r}: the path must be absolute (file:///abs/path)")
    return path


def _query(url: str, query: str) -> dict[str, str]:
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise BadRequest(f"blob store URL {url!r}: bad query string") from exc
    unknown = set(params) - _S3_PARAMS
    if unknown:
        raise BadRequest(
            f"blob store URL {url!r}: unknown parameter(s) {sorted(unknown)}; "
            f"allowed: {sorted(_S3_PARAMS)} (credentials come from the environment)"
        )
    repeated = [k for k, v in params.items() if len(v) > 1]
    if repeated:
        raise BadRequest(f"blob store URL {url!r}: parameter(s) {repeated} given twice")
    return {k: v[0] for k, v in params.items()}


def _endpoint(url: str, endpoint: str | None, region: str) -> tuple[str, bool]:
    """'host:port' and whether to use TLS."""
    if endpoint is None:
        return f"s3.{region}.amazonaws.com", True
    ep = urlsplit(endpoint)
    if ep.scheme not in ("http", "https") or not ep.hostname:
        raise BadRequest(
            f"blob store URL {url!r}: endpoint must be http://HOST[:PORT] or https://HOST[:PORT]"
        )
    if ep.path not in ("", "/") or ep.query or ep.username:
        raise BadRequest(f"blob store URL {url!r}: endpoint takes no path, query or user")
    try:
        port = ep.port
    except ValueError as exc:
        raise BadRequest(f"blob store URL {url!r}: endpoint has a bad port") from exc
    return ep.netloc if port is None else f"{ep.hostname}:{port}", ep.scheme == "https"


def _part_size(url: str, raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PART_SIZE
    try:
        return int(raw)
    except ValueError as exc:
        raise BadRequest(f"blob store URL {url!r}: part_size must be an integer") from exc


def _s3_store(url: str, access_key: str | None, secret_key: str | None) -> S3Store:
    parts = urlsplit(url)
    bucket = parts.netloc
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise BadRequest(
            f"blob store URL {url!r}: bucket {bucket!r} is not a valid S3 bucket name "
            "(3-63 characters: lower-case letters, digits, '.', '-')"
        )
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            check_key(prefix)
        except BadRequest as exc:
            raise BadRequest(f"blob store URL {url!r}: bad key prefix {prefix!r}") from exc
    if parts.fragment:
        raise BadRequest(f"blob store URL {url!r}: no fragment allowed")
    params = _query(url, parts.query)
    region = params.get("region") or "us-east-1"
    endpoint, secure = _endpoint(url, params.get("endpoint"), region)
    # a session token only goes with the environment's own key pair
    token = None if access_key else os.environ.get("AWS_SESSION_TOKEN") or None
    access_key = access_key or os.environ.get("AWS_ACCESS_KEY_ID")
    secret_key = secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access_key or not secret_key:
        raise BadRequest(
            f"blob store URL {url!r}: no S3 credentials "
            "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    return S3Store(
        url,
        endpoint=endpoint,
        bucket=bucket,
        prefix=prefix,
        access_key=access_key,
        secret_key=secret_key,
        session_token=token,
        region=region,
        secure=secure,
        part_size=_part_size(url, params.get("part_size")),
    )
