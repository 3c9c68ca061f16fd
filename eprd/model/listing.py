"""An in-memory view of a package's entries, used while a package is loaded."""

from __future__ import annotations

from collections import defaultdict

from eprd.model.files import Entry


class Listing:
    """The files and folders of one package, in the order the reference walks them."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.files: set[str] = set()
        self._children: dict[str, list[Entry]] = defaultdict(list)
        self.dirs: set[str] = set()
        files, children, dirs = self.files, self._children, self.dirs
        for entry in entries:
            path, is_dir = entry
            parent = path.rpartition("/")[0]
            children[parent].append(entry)
            if is_dir:
                dirs.add(path)
            else:
                files.add(path)
            # Archives may omit folder entries; their folders still exist for lookups.
            while parent and parent not in dirs:
                dirs.add(parent)
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
