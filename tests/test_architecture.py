"""The architecture README "How it works" describes: layers, no import circle, small modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500


def test_import_linter_contracts_are_kept() -> None:
    # The contracts live in pyproject.toml ([tool.importlinter]); lint-imports exits non-zero on a broken one.
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_import_circle_between_modules() -> None:
    graph = grimp.build_graph("eprd", include_external_packages=False)
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                circles.append((module, *back))
    assert not circles, circles


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {p.relative_to(ROOT): len(p.read_text().splitlines()) for p in (ROOT / "eprd").rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}
