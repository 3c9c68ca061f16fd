"""Proxy mode (``-feature-proxy-mode``): another registry's packages added to the local ones."""

from __future__ import annotations

from urllib.parse import urlsplit


def check_proxy_to(proxy_to: str, allow_insecure: bool) -> None:
    """The reference's -proxy-to rule: https, unless -proxy-allow-insecure ."""
    if allow_insecure or urlsplit(proxy_to).scheme.lower() == "https":
        return
    raise ValueError(f'-proxy-to must use HTTPS (got "{proxy_to}"); use -proxy-allow-insecure to allow HTTP')
