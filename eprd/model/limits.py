"""Limits on what loading one package version may cost (YAML bombs, zip bombs, huge trees).

A version that goes over any of them is rejected with a reason that names the limit, like any
other invalid version; the registry keeps serving everything else. The values are far above what
real packages use (the largest integration packages have a few thousand entries, fields files of
a few hundred KiB and nesting of about ten levels) and documented in the README ("Limits").
They are module attributes so that tests can lower them.
"""

from __future__ import annotations

# YAML documents (manifests, fields files, ingest pipelines): nesting of mappings and sequences,
# counting the levels dotted keys add (``a.b.c: 1`` is three levels).
MAX_YAML_DEPTH = 100
# Alias uses (``*name``) in one document, and nodes the document holds once every alias is
# expanded: a "billion laughs" document is small and expands exponentially.
MAX_YAML_ALIASES = 1_000
MAX_YAML_NODES = 1_000_000

# Any one file the loader reads and parses (manifests, fields files, pipelines), in bytes.
MAX_FILE_BYTES = 32 << 20

# Files and folders of one package (folder or zip), and the depth of its folder tree.
MAX_ENTRIES = 100_000
MAX_FOLDER_DEPTH = 64

# Zip packages: every entry is decompressed once when the version is loaded (and its CRC
# checked). The sum of the entries' sizes, and the ratio of an entry's size to its compressed
# size (for entries above RATIO_MIN_BYTES: small files compress as they like).
MAX_ZIP_BYTES = 1 << 30
MAX_ZIP_RATIO = 200
RATIO_MIN_BYTES = 1 << 20
