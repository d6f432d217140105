"""The mount's HTTP client: httpx over the libcurl transport, pooled, keeping no cookies."""

from __future__ import annotations

from typing import Any

import httpx

from mkwfs import __version__
from mkwfs.remote.transport import CurlTransport


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        """Keep none."""


class _CookielessClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` without a cookie jar. The API takes a bearer token and sets no
    cookies, and taking the cookies of each response costs httpx about a quarter of a
    millisecond (a cold ``ls -l`` of 1000 files: a quarter of a second)."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NoCookies()

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("this client keeps no cookies")


class MountClient(_CookielessClient):
    """The mount's client: ``curl`` is its transport, whose batch path (``heads``) the
    `ApiClient` of the mount probes sizes with."""

    def __init__(self, curl: CurlTransport) -> None:
        super().__init__(
            transport=curl,
            timeout=httpx.Timeout(30.0, connect=10.0),
            headers={"User-Agent": f"mkwfs/{__version__}"},
        )
        self.curl = curl


def open_http_client() -> MountClient:
    """One pooled client for the whole mount, on libcurl (see `mkwfs.remote.transport`)."""
    return MountClient(CurlTransport(max_connections=32))
