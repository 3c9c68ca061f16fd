"""An in-memory view of a package's entries, used while a package is loaded."""

from __future__ import annotations

from collections import defaultdict

from eprd.model.files import Entry


class Listing:
    """The files and folders of one package, in the order the reference walks them."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.files = {e.path for e in entries if not e.is_dir}
        self._children: dict[str, list[Entry]] = defaultdict(list)
        self.dirs: set[str] = set()
        for entry in entries:
            parent, _, _ = entry.path.rpartition("/")
            self._children[parent].append(entry)
            if entry.is_dir:
                self.dirs.add(entry.path)
            # Archives may omit folder entries; their folders still exist for lookups.
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = parent.rpartition("/")[0]

    def is_file(self, path: str) -> bool:
        return path in self.files

    def is_dir(self, path: str) -> bool:
        return path in self.dirs

    def children(self, folder: str) -> list[Entry]:
        """Entries directly inside ``folder`` (like a glob ``folder/*``), in walk order."""
        return self._children.get(folder.rstrip("/"), [])

    def by_depth(self) -> list[list[Entry]]:
        """Entries grouped by depth (1, 2, ...), each group in walk order."""
        groups: list[list[Entry]] = []
        for entry in self.entries:
            depth = entry.path.count("/")
            while len(groups) <= depth:
                groups.append([])
            groups[depth].append(entry)
        return groups
