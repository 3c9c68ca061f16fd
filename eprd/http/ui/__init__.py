"""The catalog page at /ui/: what the registry serves and what it refused, live.

Server-rendered with Jinja2; a small script of our own (``static/app.js``) filters by name as
you type and, on each snapshot event, fetches the page again and swaps its live regions.
Everything the page loads comes from this registry (a Content-Security-Policy says so too).
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from eprd.catalog.snapshot import Indexed
from eprd.http.ui import live, problems, readme, views
from eprd.indexers.base import DiskFile, Failed, MemoryFile, NotFound

if TYPE_CHECKING:
    from eprd.http.registry import Registry

log = logging.getLogger("eprd.ui")

PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    # Page data must never come from the browser cache: it changes with each snapshot.
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
README = "docs/README.md"
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class CatalogUI:
    """The /ui pages of one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.live = live.Broadcaster(registry.snapshot)
        registry.on_swap.append(self.live.swapped)
        self._warned: tuple[int, list[problems.Problem]] | None = None  # (generation, warnings)
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("eprd.http.ui", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["q"] = lambda value: quote(str(value), safe="")
        folder = resources.files("eprd.http.ui").joinpath("static")
        self.static = {
            entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.name[-3:] in (".js", "css")
        }

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every request under /ui."""
        path = request.path
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"})
        if path == "/ui":
            query = request.query_string
            return web.Response(status=301, headers={"Location": "/ui/" + (f"?{query}" if query else "")})
        rest = path[len("/ui/") :]
        if rest == "":
            return self._catalog(request)
        if rest == "events":
            if request.method == "HEAD":  # a stream would never end for a request without a body
                return web.Response(headers={"Content-Type": live.CONTENT_TYPE, "Cache-Control": "no-store"})
            return await self.live.stream(request)
        if rest == "problems":
            return await self._problems(request)
        if rest.startswith("static/") and rest[len("static/") :] in self.static:
            return self._static(rest[len("static/") :])
        parts = rest.split("/")
        if parts[0] == "package" and len(parts) == 3 and parts[2] == "":
            return self._latest(parts[1])
        if parts[0] == "package" and len(parts) in (3, 4) and (len(parts) == 3 or parts[3] == ""):
            return await self._package(request, parts[1], parts[2])
        return self._page("missing.html", status=404, what=path)

    # --- pages ------------------------------------------------------------------------------

    def _page(self, template: str, status: int = 200, **context: Any) -> web.Response:
        snapshot = context.setdefault("snapshot", self.registry.snapshot)
        context.setdefault("section", "")
        context["problem_count"] = len(snapshot.rejected)
        html = self.env.get_template(template).render(**context)
        return web.Response(status=status, body=html.encode(), headers=PAGE_HEADERS)

    def _catalog(self, request: web.BaseRequest) -> web.Response:
        snapshot = self.registry.snapshot
        page = views.catalog(snapshot, request.query)
        return self._page(
            "catalog.html", status=400 if page.error else 200, snapshot=snapshot, page=page, section="catalog"
        )

    def _latest(self, name: str) -> web.Response:
        snapshot = self.registry.snapshot
        # The latest stable version, or the latest prerelease of a package that has only those.
        found = views.search(snapshot, f"package={quote(name)}") or views.search(
            snapshot, f"package={quote(name)}&prerelease=true"
        )
        if not found:
            return self._page("missing.html", status=404, what=f"package {name}")
        location = f"/ui/package/{quote(name)}/{quote(found[0]['version'])}"
        return web.Response(status=302, headers={"Location": location})

    async def _package(self, request: web.BaseRequest, name: str, version: str) -> web.Response:
        snapshot = self.registry.snapshot
        page = views.package_page(snapshot, name, version)
        if page is None:
            return self._page("missing.html", status=404, what=f"package {name} {version}")
        html = ""
        if page["doc"].get("readme"):
            markdown, page["readme_error"] = await self._readme(page["item"])
            if markdown is not None:  # rendered off the event loop: a README may be long
                html = await asyncio.to_thread(readme.render, markdown, name, version)
        refused = [p for p in problems.rejected(snapshot) if p.package.split(" ")[0] == name]
        return self._page(
            "package.html", snapshot=snapshot, page=page, readme=html, refused=refused, section="package"
        )

    async def _readme(self, item: Indexed) -> tuple[str | None, str]:
        """The README's Markdown from the indexer serving the package, or None and why it is not shown."""
        indexer = self.registry.indexers.get(item.source)
        if indexer is None:
            return None, "the package's source is not known"
        resource = await indexer.static(item.package, README)
        try:
            if isinstance(resource, MemoryFile):
                return resource.body.decode("utf-8", "replace"), ""
            if isinstance(resource, DiskFile):
                data = await asyncio.to_thread(_read, resource.path)
                return data.decode("utf-8", "replace"), ""
        except OSError as err:
            return None, f"cannot read {README}: {err.strerror or err}"
        if isinstance(resource, NotFound | Failed):
            return None, f"{README} is not available"
        # Served from elsewhere (Piped, Redirect): the page fetches nothing from outside the registry.
        return None, f"{README} is served by the upstream registry"

    async def _problems(self, request: web.BaseRequest) -> web.Response:
        snapshot = self.registry.snapshot
        warned = self._warned
        if warned is None or warned[0] != snapshot.generation:
            paths = self.registry.config.package_paths
            found = await asyncio.to_thread(problems.warnings, snapshot, paths)
            warned = self._warned = (snapshot.generation, found)
        return self._page(
            "problems.html",
            snapshot=snapshot,
            rejected=problems.rejected(snapshot),
            warnings=warned[1],
            section="problems",
        )

    def _static(self, name: str) -> web.Response:
        ctype = _STATIC_TYPES[name[name.rindex(".") :]]
        return web.Response(
            body=self.static[name],
            headers={"Content-Type": ctype, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()
