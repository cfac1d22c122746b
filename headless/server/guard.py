"""Who may use the persona routes: Host, Origin, token, and the headers every answer carries.

The same checks run in both hosts (they wrap each handler in `add_routes`), because inside
ComfyUI the pack cannot rely on ComfyUI's own middleware (it lets `Origin: null` through and
skips its check when Host is not a loopback name).

- **Host** (DNS rebinding): a page on `evil.example` whose name re-resolves to 127.0.0.1
  reaches the server with `Host: evil.example`. Only an IP literal, `localhost` (any port)
  or a name in `allowed_hosts` is accepted: a rebinding attack always carries the
  attacker's *name*, and a user who reaches the server by name (a reverse proxy, a LAN name)
  lists it.
- **Origin** (cross-site WebSocket hijacking, forged uploads): browsers send `Origin` on every
  WebSocket handshake and every cross-origin POST. A request is served when it has no
  Origin (a non-browser client: curl, the CLI, a bot with the token), or its Origin is the
  origin being served (same scheme-less host and port as `Host`), or it is listed in
  `allowed_origins`. `null` (sandboxed iframes, file pages) is refused.
- **Cross-site reads**: a page can embed `<img src>` or `<video src>` from any origin without
  sending Origin; browsers do send `Sec-Fetch-Site`, so reads of data and media refuse
  `cross-site` and `same-site` (another port of the same host is another program).
- **Token**: on a server started with a token, reads of data (gallery, portraits,
  recordings, metrics) and uploads need it too (`Authorization: Bearer`, or `?token=` for
  URLs the page builds); the WebSocket sends it in `hello` (PROTOCOL.md).
- **Headers**: every answer gets `nosniff`, `Referrer-Policy: no-referrer`, framing denied,
  `Cross-Origin-Resource-Policy: same-origin`; the page gets a strict CSP (scripts, styles
  and connections from its own origin only; the page has no inline script or style).
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

__all__ = ["AccessPolicy", "Route", "guarded", "security_headers"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Route(enum.Enum):
    """What a route does, which decides the checks it gets."""

    PAGE = "page"  # the chat page and its static files: Host only
    HEALTH = "health"  # liveness for load balancers: Host only
    READ = "read"  # data and media: Host, no cross-site fetch, token
    WRITE = "write"  # uploads: Host, Origin, token
    SOCKET = "socket"  # the WebSocket: Host, Origin (its token comes in `hello`)


PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _split_host(value: str) -> tuple[str, int | None] | None:
    """'Example.COM:8189' → ('example.com', 8189); '[::1]:80' → ('::1', 80); None if malformed."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host.lower().rstrip("."), port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class AccessPolicy:
    """The Host/Origin/token rules of one service (see the module docstring)."""

    def __init__(self, token: str | None = None, allowed_origins: Iterable[str] = (), allowed_hosts: Iterable[str] = ()):
        self.token = token or None
        self.allowed_hosts = {h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()}
        self.allowed_origins = {self._normal_origin(o) for o in allowed_origins if o.strip()} - {None}

    @staticmethod
    def _normal_origin(origin: str) -> str | None:
        """'HTTP://Example.com:80' → 'http://example.com'; None for `null` or anything malformed."""
        try:
            parts = urlsplit(origin.strip())
            host, port = parts.hostname, parts.port
        except ValueError:
            return None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not host:
            return None
        netloc = f"[{host}]" if ":" in host else host
        if port is not None and port != _DEFAULT_PORTS[scheme]:
            netloc += f":{port}"
        return f"{scheme}://{netloc}"

    # -- the checks --------------------------------------------------------------------------

    def host_ok(self, request: web.Request) -> bool:
        split = _split_host(request.headers.get("Host", ""))
        if split is None:
            return False
        host = split[0]
        return host == "localhost" or host.endswith(".localhost") or _is_ip(host) or host in self.allowed_hosts

    def origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser (browsers always send Origin where it matters)
        normal = self._normal_origin(origin)
        if normal is None:
            return False  # `null`, or garbage
        if normal in self.allowed_origins:
            return True
        served, origin_host = _split_host(request.headers.get("Host", "")), urlsplit(normal)
        if served is None:
            return False
        default = _DEFAULT_PORTS[origin_host.scheme]
        return (origin_host.hostname, origin_host.port or default) == (served[0], served[1] or default)

    def fetch_site_ok(self, request: web.Request) -> bool:
        site = request.headers.get("Sec-Fetch-Site")
        return site is None or site in ("same-origin", "none")

    def token_ok(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def refusal(self, request: web.Request, route: Route) -> web.Response | None:
        """A 4xx answer when `request` may not use a `route` route, else None."""
        if not self.host_ok(request):
            return _refuse(421, "bad_host", "this server is not served under that Host name (add it to allowed_hosts)")
        if route in (Route.WRITE, Route.SOCKET) and not self.origin_ok(request):
            return _refuse(403, "bad_origin", "requests from other web pages are not accepted (allowed_origins)")
        if route is Route.READ and not (self.fetch_site_ok(request) and self.origin_ok(request)):
            return _refuse(403, "bad_origin", "other web pages may not read this (allowed_origins)")
        if route in (Route.READ, Route.WRITE) and not self.token_ok(request):
            return _refuse(401, "unauthorized", "token missing or wrong (Authorization: Bearer TOKEN, or ?token=)")
        return None


def _refuse(status: int, code: str, message: str) -> web.Response:
    response = web.json_response({"code": code, "message": message}, status=status)
    security_headers(response)
    return response


def security_headers(response: web.StreamResponse, page: bool = False) -> None:
    """The headers every answer carries; `page`: the HTML page's CSP too."""
    if response.prepared:
        return
    for name, value in _COMMON_HEADERS.items():
        response.headers.setdefault(name, value)
    if page:
        response.headers["Content-Security-Policy"] = PAGE_CSP


def guarded(handler: Handler, route: Route, policy: AccessPolicy) -> Handler:
    """`handler` behind the checks for `route`, its answer with the security headers."""

    async def checked(request: web.Request) -> web.StreamResponse:
        refusal = policy.refusal(request, route)
        if refusal is not None:
            return refusal
        response = await handler(request)
        security_headers(response, page=route is Route.PAGE)
        return response

    checked.__name__ = getattr(handler, "__name__", "handler")
    return checked
