"""Config that composes: `include: [backends.yaml, routes/*.yaml]` merges other files into
the main one, in order, and remembers where each backend and endpoint came from so every
problem names the file it is in.

Merge rules: mappings (`backends`, and any other named section) merge by key, and a key
defined twice is a problem naming both files; lists (`endpoints`) are concatenated in
include order (the main file's first); `version` may be repeated only with the same value.
Every later problem (a field's, a cross-reference's) is located back into its own file by
`Origins`, so two endpoints with the same route in two files name both files. Pure: the
loader reads the files (gateway/config/loader.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_ENDPOINT = re.compile(r"^endpoints\[(\d+)\]")
_BACKEND = re.compile(r"^backends\.([^.\[]+)")


@dataclass(frozen=True, slots=True)
class Document:
    """One loaded file: the name its problems use, and its (expanded) data."""

    name: str
    data: dict[str, Any]


@dataclass(slots=True)
class Origins:
    """Where each endpoint (by merged index) and backend (by name) was written."""

    main: str
    endpoints: list[tuple[str, int]] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)

    def place(self, where: str) -> tuple[str, str]:
        """(file, location inside that file) of a location in the merged document."""
        match = _ENDPOINT.match(where)
        if match and int(match.group(1)) < len(self.endpoints):
            name, local = self.endpoints[int(match.group(1))]
            return name, f"endpoints[{local}]" + where[match.end() :]
        match = _BACKEND.match(where)
        if match and match.group(1) in self.backends:
            return self.backends[match.group(1)], where
        return self.main, where

    def line(self, where: str, why: str) -> str:
        """A problem line `file: location: why`, endpoint references in `why` located too."""
        name, local = self.place(where)
        why = re.sub(r"endpoints\[(\d+)\]", lambda m: self._cite(int(m.group(1)), name), why)
        return f"{name}: {local}: {why}" if local else f"{name}: {why}"

    def _cite(self, index: int, here: str) -> str:
        if index >= len(self.endpoints):
            return f"endpoints[{index}]"
        name, local = self.endpoints[index]
        return f"endpoints[{local}]" if name == here else f"{name} endpoints[{local}]"


def merge(main: Document, included: list[Document]) -> tuple[dict[str, Any], Origins, list[str]]:
    """The merged data, its origins, and the problems of merging (as full lines)."""
    origins = Origins(main.name)
    merged: dict[str, Any] = {}
    owners: dict[tuple[str, str], str] = {}  # (section, key) -> the file that defined it
    problems: list[str] = []
    for document in [main, *included]:
        for section, value in document.data.items():
            if section == "include":
                continue
            if section == "endpoints" and isinstance(value, list):
                merged.setdefault("endpoints", [])
                for local, endpoint in enumerate(value):
                    origins.endpoints.append((document.name, local))
                    merged["endpoints"].append(endpoint)
            elif isinstance(value, dict) and isinstance(merged.setdefault(section, {}), dict):
                for key, item in value.items():
                    first = owners.setdefault((section, str(key)), document.name)
                    if first != document.name:
                        problems.append(
                            f"{document.name}: {section}.{key}: also defined in {first}"
                        )
                        continue
                    merged[section][key] = item
                    if section == "backends":
                        origins.backends[str(key)] = document.name
            elif section not in merged or merged[section] == value:
                merged[section] = value
            else:
                problems.append(
                    f"{document.name}: {section}: {value!r} differs from {main.name}'s "
                    f"{merged[section]!r}"
                )
    return merged, origins, problems
