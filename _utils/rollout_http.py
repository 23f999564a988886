"""
The one HTTP client of the rollout: health checks of the ready gate, the probes that prove a
release's fixes (GET), and the load balancer's drain/undrain hooks (any method).

Why not ``salt.utils.http.query``: its tornado backend always follows redirects, to any host,
and takes its timeouts from the minion's opts (an hour by default). This GET never uses a proxy
(the service is on the host's own address), follows a redirect only to the same scheme, host
and port (a health URL that sends us elsewhere is not healthy), and waits at most ``timeout``
seconds for each connect and read.

Reached as ``__utils__["rollout_http.get"]`` and ``__utils__["rollout_http.request"]``.

:depends: none
"""

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request

__virtualname__ = "rollout_http"


def __virtual__():
    # Utilities of this formula, always available where it runs (minions and master).
    return __virtualname__


MAX_BODY = 1024 * 1024
MAX_REDIRECTS = 5
_AGENT = "salt-rollout"


def _origin(url):
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.hostname, parts.port


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the origin of the first request; otherwise the 3xx stands."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, origin):
        super().__init__()
        self.origin = origin

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != self.origin:
            return None  # urllib then raises HTTPError(code): the caller sees the 3xx
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def get(url, timeout=5.0, max_body=MAX_BODY):
    """GET ``url``: see :func:`request`."""
    return request(url, "GET", timeout, max_body)


def request(url, method="GET", timeout=5.0, max_body=MAX_BODY):
    """
    ``method`` (GET, POST, PUT, ...; no body) ``url`` (http or https). Returns ``{"url", "status", "body", "error"}``: ``status`` is
    the HTTP status (a redirect off the URL's host stays a 3xx), or None with ``error`` saying
    why there was no answer (refused, timed out, ...); ``body`` is at most ``max_body`` bytes,
    decoded as UTF-8 with replacement.
    """
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        return {"url": url, "status": None, "body": "", "error": "not an http(s) URL"}
    deadline = time.monotonic() + float(timeout)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), _SameOriginRedirects(_origin(url))
    )
    method = str(method).upper()
    req = urllib.request.Request(url, headers={"User-Agent": _AGENT}, method=method,
                                 data=None if method in ("GET", "HEAD") else b"")
    ret = {"url": url, "status": None, "body": "", "error": None}
    try:
        with opener.open(req, timeout=max(deadline - time.monotonic(), 0.01)) as response:
            ret["status"] = response.status
            ret["body"] = response.read(max_body).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        ret["status"] = exc.code
        try:
            ret["body"] = exc.read(max_body).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            pass
        finally:
            exc.close()
    except urllib.error.URLError as exc:
        ret["error"] = str(exc.reason)
    except (OSError, http.client.HTTPException) as exc:
        ret["error"] = str(exc) or type(exc).__name__
    return ret
