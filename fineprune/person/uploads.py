"""Uploaded files -> ``(name, bytes)`` pairs, zips opened in memory (never extracted to disk),
with limits that keep one upload from exhausting memory (zip bombs, thousands of files)."""
from __future__ import annotations

import io
import zipfile
from pathlib import PurePosixPath
from typing import Sequence

MAX_UPLOAD_FILES = 400  # files (or zip members) taken from one upload
MAX_ZIP_BYTES = 200 * 2**20  # uncompressed bytes read from one zip (zip bombs)
MAX_MEMBER_BYTES = 64 * 2**20  # one file inside a zip


def expand_uploads(files: Sequence[tuple[str, bytes]], suffixes: Sequence[str]) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """Uploaded files -> ``(name, bytes)`` of usable files, zips opened in memory (nested folders ok).

    Returns ``(files, skipped)`` where ``skipped`` is ``[(name, reason)]``. Never extracts to disk.
    """
    wanted = tuple(s.lower() for s in suffixes)
    out: list[tuple[str, bytes]] = []
    skipped: list[tuple[str, str]] = []
    for name, data in files:
        if name.lower().endswith(".zip"):
            members, bad = _zip_members(name, data, wanted, MAX_UPLOAD_FILES - len(out))
            out.extend(members)
            skipped.extend(bad)
        elif name.lower().endswith(wanted):
            if len(out) >= MAX_UPLOAD_FILES:
                skipped.append((name, f"more than {MAX_UPLOAD_FILES} files in one upload"))
            else:
                out.append((name, data))
        else:
            skipped.append((name, f"not a {'/'.join(wanted)} file"))
    return out, skipped


def _zip_members(name: str, data: bytes, wanted: tuple[str, ...], room: int):
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except Exception as exc:
        return [], [(name, f"not a readable zip file ({type(exc).__name__})")]
    members, skipped, total = [], [], 0
    for info in infos:
        inner = f"{name}/{info.filename}"
        base = PurePosixPath(info.filename).name
        if info.is_dir() or base.startswith(".") or "__MACOSX" in info.filename:
            continue
        if not base.lower().endswith(wanted):
            skipped.append((inner, f"not a {'/'.join(wanted)} file"))
            continue
        if len(members) >= room:
            skipped.append((inner, f"more than {MAX_UPLOAD_FILES} files in one upload"))
            continue
        if info.file_size > MAX_MEMBER_BYTES or total + info.file_size > MAX_ZIP_BYTES:
            skipped.append((inner, f"too large ({info.file_size / 2**20:.0f} MB uncompressed)"))
            continue
        try:
            content = archive.read(info)
        except Exception as exc:
            skipped.append((inner, f"cannot be read from the zip ({type(exc).__name__})"))
            continue
        total += len(content)
        members.append((inner, content))
    return members, skipped
