"""A backup's manifest: `manifest.json` beside the files it lists, each with its size and
sha256, written last (so a backup without one is unfinished) and checked first on restore."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT = 1  # bumped when a restore of an older format would need to read it differently


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and what to do."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(root: Path, path: Path) -> dict[str, Any]:
    return {
        "path": path.relative_to(root).as_posix(),
        "size": path.stat().st_size,
        "sha256": file_sha256(path),
    }


def inside(root: Path, name: str) -> Path:
    """`root / name` for a name read from a manifest: relative, without `..`, so a crafted
    manifest cannot make a restore read or write outside the folders it is given."""
    relative = PurePosixPath(name)
    if not name or relative.is_absolute() or ".." in relative.parts or "\0" in name:
        raise BackupError(f"the manifest names a file outside the backup: {name!r}")
    return root / relative


def manifest_write(root: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically (a reader never sees half of one)."""
    target = root / MANIFEST_NAME
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(partial, target)
    return target


def manifest_read(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BackupError(
            f"{root} holds no {MANIFEST_NAME}: not a Gas Town backup, or an unfinished one "
            "(the manifest is written last)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BackupError(f"{path}: unknown backup format {found!r} (this Gas Town reads {FORMAT})")
    if problem := _shape_problem(manifest):
        raise BackupError(f"{path} is malformed: {problem}")
    return manifest


# What a restore reads from a manifest, by key, with its type (a hand-edited or damaged
# manifest is refused with the key it lacks, not a traceback).
_SHAPE: dict[str, Any] = {
    "created_at": str,
    "source": {"host": str},
    "database": {"vendor": str, "file": str, "migrations": list},
    "files": [{"path": str, "size": int, "sha256": str}],
    "repositories": [
        {
            "id": int,
            "name": str,
            "path": str,
            "data_dir_path": (str, type(None)),
            "bundle": (str, type(None)),
            "refs": dict,
            "head": (str, type(None)),
            "bare": bool,
            "object_format": str,
            "missing": bool,
        }
    ],
    "run_logs": [str],
    "secret_key": (str, type(None)),
}


def _shape_problem(value: Any, shape: Any = _SHAPE, where: str = "") -> str | None:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where.rstrip('.') or 'the manifest'} is not an object"
        for key, inner in shape.items():
            if key not in value:
                return f"{where}{key} is missing"
            if problem := _shape_problem(value[key], inner, f"{where}{key}."):
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where.rstrip('.')} is not a list"
        for i, item in enumerate(value):
            if problem := _shape_problem(item, shape[0], f"{where.rstrip('.')}[{i}]."):
                return problem
        return None
    if not isinstance(value, shape) or (shape is int and isinstance(value, bool)):
        return f"{where.rstrip('.')} has the wrong type"
    return None


def manifest_problems(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Every listed file that is missing or differs from its size and sha256 (empty: intact)."""
    problems = []
    for entry in manifest.get("files", []):
        path = inside(root, entry["path"])
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif (size := path.stat().st_size) != entry["size"]:
            problems.append(f"{entry['path']}: {size} bytes, the manifest says {entry['size']}")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: its sha256 differs from the manifest's")
    return problems


def count_text(n: int, noun: str) -> str:
    """`count_text(2, "branch")` -> "2 branches" (what the commands print)."""
    if n == 1:
        return f"1 {noun}"
    if noun.endswith("y"):
        return f"{n} {noun[:-1]}ies"
    return f"{n} {noun}{'es' if noun.endswith(('s', 'h')) else 's'}"


def size_text(size: int) -> str:
    """1536 -> '1.5 KiB' (what the commands print)."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"
