"""Package READMEs: Markdown to HTML, sanitised, with links and images kept inside the registry.

Packages are third-party content: whatever HTML a README carries goes through nh3 (scripts,
event handlers, styles and unknown tags removed), and an image is only kept when it is served
by this registry, so a page never makes the browser fetch from elsewhere.
"""

from __future__ import annotations

import posixpath
from urllib.parse import quote, urlsplit

import nh3
from markdown_it import MarkdownIt

_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")
_LINK_SCHEMES = {"http", "https", "mailto"}


def render(markdown: str, name: str, version: str) -> str:
    """The README of ``name`` ``version`` as safe HTML."""
    base = f"/package/{quote(name)}/{quote(version)}/"

    def keep(tag: str, attribute: str, value: str) -> str | None:
        if attribute not in ("src", "href"):
            return value
        return _resolve(value, base, image=attribute == "src")

    return nh3.clean(
        _MARKDOWN.render(markdown),
        attribute_filter=keep,
        url_schemes=_LINK_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )


def _resolve(value: str, base: str, image: bool) -> str | None:
    """A README's link or image address as the page should use it, or None to drop it."""
    value = value.strip()
    if value.startswith("#"):
        return None if image else value
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        # Links may leave the registry (the user follows them); images would be fetched by the page.
        return None if image or parts.scheme.lower() not in _LINK_SCHEMES else value
    if value.startswith("/"):
        return value  # already a path of this registry
    joined = posixpath.normpath(posixpath.join("docs", parts.path))
    if joined.startswith("..") or joined == ".":
        return None
    suffix = f"#{parts.fragment}" if parts.fragment and not image else ""
    return base + joined + suffix
