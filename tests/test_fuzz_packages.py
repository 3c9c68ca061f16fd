"""Fuzzing the loading side (issue 10): mutated package folders and zips never take eprd down.

Mutants start from :mod:`pkgfactory` packages: YAML text edited at random places (with YAML's
special characters, anchors, aliases, tags, dotted keys, bytes that are not UTF-8), odd file
names (not UTF-8, ``%2e%2e.md``, ``q?x.md``, backslashes...), symlinks and zip entry names that
lead to a secret file outside the package folders, and for zips random bytes of the archive
overwritten or cut off. They are loaded in this process (many, fast), then by a real
``eprd`` process at start-up and through its live reload. Asserted: loading never raises, a
rejection has a reason any JSON document can carry, the process stays up and serves the good
package, every mutant it does not serve is listed in ``/debug/pprof/snapshot``, no request
for a served package's documents or files answers 5xx or holds the secret, the log has no
traceback (the supervisor's excepted) and SIGTERM exits 0.

``EPRD_FUZZ_EXAMPLES`` sets how many mutants each part tries (CI: 100 in process and 24 through
the process; beyond 50, one eprd process per round of at most 50); the long run is
``EPRD_FUZZ_EXAMPLES=300 .venv/bin/python -m pytest -q tests/test_fuzz_packages.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pkgfactory as pf
from conftest import free_port, write_config
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from eprd.model.files import PackageFileError
from eprd.model.package import LoadOptions, Package, PackageError, load_package, printable, render_document

EXAMPLES = int(os.environ.get("EPRD_FUZZ_EXAMPLES", "0") or 0)
IN_PROCESS = EXAMPLES or 100
THROUGH_PROCESS = EXAMPLES or 24
# Mutants per eprd process: more in one example overflow Hypothesis's buffer, so a long run starts
# eprd once per round of at most this many.
PER_PROCESS = min(THROUGH_PROCESS, 50)
ROUNDS = -(-THROUGH_PROCESS // PER_PROCESS)

YAML_FILES = ("manifest.yml", "data_stream/log/manifest.yml", "data_stream/log/fields/base-fields.yml")
SNIPPETS = (
    "&a ", "*a", "x: &a [*a]\n", "<<: *a\n", "!!binary ", "!!python/object:os.system ", "!x ",
    "{", "}", "[", "]", ": ", ":", "\t", "- ", "? ", "|", ">", "|+\n", "'", '"', "\\", "\\x",
    "%YAML 1.1\n", "---\n", "...\n", "#", " #", "a.b.c: 1\n", ".: 1\n", "a..b: 1\n", "\x00",
    "\ufeff", "\u2028", "\x85", "0x", "0o7", "1e400", ".inf", ".nan", "~", "y", "\r\n", "\n",
    "\n  ", "\n    ", "- - - - x\n", "name: ", "version: ", "format_version: 9.9.9\n",
    "type: input\n", "release: ", "conditions:\n  kibana.version: ",
)  # fmt: skip
ODD_NAMES = (
    b"\xff\xfe.md", b"%2e%2e.md", b"q?x.md", b"\\x.md", b"a b.md", b"..md", b"-.md",
    "\u00fcn\u00efc\u00f6de.md".encode(), b"a" * 200, b".hidden", b"x.zip", b"#frag.md", b"%00.md",
    b"con", b"x.sig", b"\x01\x7f.md",
)  # fmt: skip
FOLDERS = ("", "docs/", "img/", "data_stream/log/", "data_stream/log/fields/", "kibana/dashboard/")
SECRET = b"TOP-SECRET-fuzz-5d1e never serve this"
ESCAPES = (b"docs/leak.md", b"img/leak.svg", b"leak.md", b"docs/README.md.link")


@dataclass(frozen=True)
class Mutant:
    """A package as ``{path: content}`` (paths as bytes: names need not be UTF-8), and how to store it."""

    files: dict[bytes, bytes]
    zipped: bool
    zip_edits: tuple[tuple[int, int], ...] = ()  # (offset, byte) overwritten in the zip
    cut: float | None = None  # a zip truncated to this fraction of its length
    # Symlinks (folders) or entries (zips) named so that they lead to SECRET outside the package.
    escapes: tuple[bytes, ...] = ()

    def write(self, root: Path, index: int) -> Path:
        """Store as ``fuzz/<1.0.index>/`` or ``fuzz-<index>.zip`` under ``root``."""
        if self.zipped:
            location = root / f"fuzz-{index}.zip"
            location.write_bytes(self.zip_bytes(index))
            return location
        location = root / "fuzz" / f"1.0.{index}"
        for rel, content in self.files.items():
            path = os.fsencode(location) + b"/" + rel
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.isdir(path):
                continue  # (a generated name that is one of the package's folders)
            with open(path, "wb") as fh:
                fh.write(content)
        for rel in self.escapes:
            link = os.fsencode(location) + b"/" + rel
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if not os.path.lexists(link):
                os.symlink(os.fsencode(root.parent / "outside" / "secret.txt"), link)
        return location

    def zip_bytes(self, index: int) -> bytes:
        top = f"fuzz-1.0.{index}"
        entries = [
            (f"{top}/{rel.decode('utf-8', 'backslashreplace')}", content)
            for rel, content in self.files.items()
        ]
        entries += [(f"{top}/{rel.decode('utf-8', 'backslashreplace')}/../../../outside/secret.txt", SECRET)
                    for rel in self.escapes]  # fmt: skip
        data = bytearray(pf.zip_bytes(entries))
        for offset, value in self.zip_edits:
            data[offset % len(data)] = value
        if self.cut is not None:
            data = data[: int(len(data) * self.cut)]
        return bytes(data)


def _edit(text: bytes, kind: str, where: int, payload: bytes) -> bytes:
    at = where % (len(text) + 1)
    if kind == "insert":
        return text[:at] + payload + text[at:]
    if kind == "delete":
        return text[:at] + text[at + len(payload) + 1 :]
    return text[:at] + payload + text[at + len(payload) :]


payloads = st.one_of(
    st.sampled_from(SNIPPETS).map(str.encode),
    st.text(max_size=6).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=6),
)
yaml_edits = st.tuples(
    st.sampled_from(YAML_FILES),
    st.sampled_from(("insert", "delete", "replace")),
    st.integers(0, 1 << 16),
    payloads,
)
odd_names = st.one_of(
    st.sampled_from(ODD_NAMES),
    st.binary(min_size=1, max_size=12).filter(
        lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")
    ),
)


def _sometimes(strategy: st.SearchStrategy[Any], empty: Any) -> st.SearchStrategy[Any]:
    """``strategy`` one time in three, else ``empty``: most mutants keep most of the package good."""
    return st.integers(0, 2).flatmap(lambda n: strategy if n == 2 else st.just(empty))


@st.composite
def mutants(draw: st.DrawFn) -> Mutant:
    files = {path.encode(): content for path, content in pf.package_files("fuzz", "1.0.0").items()}
    for name, kind, where, payload in draw(_sometimes(st.lists(yaml_edits, min_size=1, max_size=3), [])):
        files[name.encode()] = _edit(files[name.encode()], kind, where, payload)
    odd = st.lists(st.tuples(st.sampled_from(FOLDERS), odd_names), min_size=1, max_size=2)
    for folder, name in draw(_sometimes(odd, [])):
        files[folder.encode() + name] = b"odd\n"
    removed = draw(_sometimes(st.sampled_from(sorted(files)), None))
    if removed is not None and len(files) > 1:
        del files[removed]
    escapes = tuple(
        draw(_sometimes(st.lists(st.sampled_from(ESCAPES), min_size=1, max_size=2, unique=True), []))
    )
    if not draw(st.booleans()):
        return Mutant(files, False, escapes=escapes)
    byte_edits = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=3)
    edits = tuple(draw(_sometimes(byte_edits, ())))
    cut = draw(_sometimes(st.floats(0.0, 1.0), None))
    return Mutant(files, True, edits, cut, escapes)


def with_version(mutant: Mutant, index: int) -> Mutant:
    """The mutant, with the version its folder gets written in the manifests."""
    version = f"1.0.{index}".encode()
    files = {rel: content.replace(b"1.0.0", version) for rel, content in mutant.files.items()}
    return Mutant(files, mutant.zipped, mutant.zip_edits, mutant.cut, mutant.escapes)


def write_secret(root: Path) -> None:
    """The file outside the package folders that no mutant may serve."""
    secret = root.parent / "outside" / "secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(SECRET)


def check_loaded(result: Package | PackageError) -> None:
    """What a load gives is usable: a rejection's text, or a package whose files can be read."""
    if isinstance(result, PackageError):
        assert result.reason
        orjson.dumps({"location": result.location, "reason": result.reason})
        return
    orjson.loads(render_document(result, result.deprecated))
    for entry in result.files.entries():
        orjson.dumps(entry.path)
        if not entry.is_dir:
            # (the two errors the HTTP layer answers 4xx)
            with contextlib.suppress(PackageFileError, FileNotFoundError):
                assert SECRET not in result.files.read(entry.path), entry.path


# --- in process ------------------------------------------------------------------------------------


@settings(
    max_examples=IN_PROCESS,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutant=mutants())
def test_loading_a_mutant_never_raises(mutant: Mutant, tmp_path_factory: Any) -> None:
    root = tmp_path_factory.mktemp("fuzz") / "packages"
    root.mkdir()
    write_secret(root)
    location = with_version(mutant, 7).write(root, 7)
    result, _ = load_package(str(location), LoadOptions())  # (raising fails the test)
    check_loaded(result)


# --- through a real eprd process ------------------------------------------------------------------


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def snapshot(pprof: str) -> dict[str, Any]:
    return json.loads(get(pprof + "snapshot")[1])


def served(base: str) -> list[dict[str, Any]]:
    status, body = get(f"{base}/search?all=true&prerelease=true")
    assert status == 200, body
    return json.loads(body)


def check_serving(base: str, pprof: str, locations: list[Path]) -> None:
    """The good package is served, every mutant is served or listed as rejected, nothing is 5xx."""
    entries = served(base)
    assert ("good", "1.0.0") in {(e["name"], e["version"]) for e in entries}
    rejected = {item["location"] for item in snapshot(pprof)["rejected"]}
    fuzz = [e["version"] for e in entries if e["name"] == "fuzz"]
    # A mutant is rejected (with its path), or served as fuzz 1.0.<index>; a mutated manifest may
    # serve it under another version or name, as many as are served beside those.
    unexplained = [
        location
        for index, location in enumerate(locations)
        if printable(str(location)) not in rejected and f"1.0.{index}" not in fuzz
    ]
    others = len(entries) - len([v for v in fuzz if v.startswith("1.0.")])
    assert len(unexplained) <= others, unexplained
    for entry in entries:
        status, body = get(base + entry["path"] + "/")
        assert status < 500, (entry["path"], status)
        doc = json.loads(body)
        for asset in doc.get("assets", [])[:40]:
            status, body = get(base + urllib.parse.quote(asset, safe="/"))
            assert status < 500, (asset, status)
            assert SECRET not in body, asset


def tracebacks(log: str) -> list[str]:
    marks = ("Traceback", "stack_trace", "Logging error")
    return [
        line
        for line in log.splitlines()
        if any(mark in line for mark in marks) and "eprd.supervisor" not in line
    ]


def wait_for(check: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


@settings(
    max_examples=ROUNDS,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,  # (the lists' sizes are set by EPRD_FUZZ_EXAMPLES, on purpose)
    ],
)
@given(
    at_start=st.lists(mutants(), min_size=PER_PROCESS // 2, max_size=PER_PROCESS // 2),
    live=st.lists(mutants(), min_size=PER_PROCESS - PER_PROCESS // 2, max_size=PER_PROCESS),
)
def test_mutants_at_start_up_and_through_live_reload(
    at_start: list[Mutant], live: list[Mutant], eprd_process: Any, tmp_path_factory: Any
) -> None:
    tmp = tmp_path_factory.mktemp("fuzzproc")
    root = tmp / "packages"
    pf.write_dir(root, "good", "1.0.0")
    write_secret(root)
    first = [with_version(m, i).write(root, i) for i, m in enumerate(at_start)]
    config = write_config(tmp / "config.yml", [root])
    port = free_port()
    process = eprd_process(
        ["-config", str(config), "-require-package-signatures=false", "-log-level", "warn",
         "-httpprof", f"127.0.0.1:{port}"],
        cwd=tmp,
    )  # fmt: skip
    pprof = f"http://127.0.0.1:{port}/debug/pprof/"
    process.wait_healthy(timeout=120)
    check_serving(process.base, pprof, first)
    wait_for(lambda: snapshot(pprof)["watcher"]["running"], "the watcher runs")

    offset = len(first)
    second = []
    for i, mutant in enumerate(live):
        second.append(with_version(mutant, offset + i).write(root, offset + i))
    time.sleep(0.5)
    pf.write_dir(root, "good", "2.0.0")

    def caught_up() -> bool:
        versions = {(e["name"], e["version"]) for e in served(process.base)}
        return ("good", "2.0.0") in versions

    wait_for(caught_up, "a good change after the mutants is picked up")
    time.sleep(1.0)  # (the last batches of the mutants' writes)
    assert process.proc.poll() is None
    check_serving(process.base, pprof, first + second)
    assert snapshot(pprof)["tasks"]["watcher"]["state"] == "running"
    code, _, log = process.stop()
    assert code == 0, log
    assert tracebacks(log) == [], "\n".join(tracebacks(log))
