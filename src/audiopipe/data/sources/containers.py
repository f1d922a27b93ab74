"""Readers for the containers that hold realmix's recordings: Debian `.deb` (ar + tar), Qt `.rcc`
(GCompris), OpenTTD `.cat` (OpenSFX) and `.pk3` (UFO:AI, a plain zip). Each yields `(inner_path, bytes)`.

Formats (verified on the pinned packages, see ../shared/spec/demo_data.md §8):
    .deb  `!<arch>\\n`, then 60-byte member headers (name 16, ..., size 10 at offset 48, magic 2) and
          2-byte-aligned bodies; the `data.tar.*` member holds the files.
    .rcc  big-endian: magic `qres`, version, tree/data/names offsets; tree nodes of 14 (v1) or 22 bytes
          (name offset u32, flags u16, then child count + first child for directories, or
          country/language + data offset for files); flag 1 = zlib with a 4-byte size prefix.
    .cat  little-endian index of (offset, size) u32 pairs (count = first offset / 8, top bit masked),
          each entry a length-prefixed latin-1 title, then a RIFF wav.
"""

from __future__ import annotations

import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator


class ContainerError(ValueError):
    """A container is truncated or not of the expected format."""


def read_ar(data: bytes) -> dict[str, bytes]:
    """Members of a Unix `ar` archive (the outer layer of a .deb)."""
    if not data.startswith(b"!<arch>\n"):
        raise ContainerError("not an ar archive (missing !<arch> magic)")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        if header[58:60] != b"`\n":
            raise ContainerError(f"bad ar member header at byte {pos}")
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = data[pos + 60 : pos + 60 + size]
        if len(body) != size:
            raise ContainerError(f"ar member {name!r} is truncated")
        members[name] = body
        pos += 60 + size + (size % 2)
    return members


def read_deb(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Regular files of a .deb's data archive as `(path without leading ./, bytes)` (xz, gz, bz2, plain)."""
    members = read_ar(data)
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None:
        raise ContainerError(f"no data.tar member in .deb (members: {sorted(members)})")
    payload = members[name]
    if name.endswith(".zst"):
        raise ContainerError("data.tar.zst needs dpkg-deb (python's tarfile cannot read zstd)")
    if name.endswith(".xz"):
        payload = lzma.decompress(payload)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as tf:
        for member in tf:
            if member.isfile():
                fh = tf.extractfile(member)
                if fh is not None:
                    yield member.name.removeprefix("./"), fh.read()


def read_rcc(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Files of a Qt binary resource (`.rcc`) as `(path, bytes)`."""
    if data[:4] != b"qres":
        raise ContainerError("not a Qt resource file (missing qres magic)")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        start = names + offset + 6  # u16 length, u32 hash, then UTF-16-BE characters
        return data[start : start + 2 * length].decode("utf-16-be")

    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        node = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[node : node + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[node + 6 : node + 14])
            child_prefix = f"{prefix}{name}/" if index else ""
            stack.extend((first + k, child_prefix) for k in reversed(range(count)))
            continue
        (data_offset,) = struct.unpack(">I", data[node + 10 : node + 14])
        start = payload + data_offset
        (size,) = struct.unpack(">I", data[start : start + 4])
        blob = data[start + 4 : start + 4 + size]
        if len(blob) != size:
            raise ContainerError(f"rcc entry {prefix}{name!r} is truncated")
        if flags & 4:
            raise ContainerError(f"rcc entry {prefix}{name!r} is zstd-compressed (not supported)")
        yield prefix + name, zlib.decompress(blob[4:]) if flags & 1 else blob


def read_cat(data: bytes) -> Iterator[tuple[int, str, bytes]]:
    """Entries of an OpenTTD sound `.cat` as `(index, title, wav bytes)`; unused slots give empty bytes."""
    if len(data) < 8:
        raise ContainerError("cat file too short")
    count = (struct.unpack("<I", data[:4])[0] & 0x7FFFFFFF) // 8
    for i in range(count):
        offset, size = struct.unpack("<II", data[i * 8 : i * 8 + 8])
        offset &= 0x7FFFFFFF
        if offset + size > len(data):
            raise ContainerError(f"cat entry {i} points past the end of the file")
        if size == 0:
            yield i, "", b""
            continue
        length = data[offset]
        title = data[offset + 1 : offset + 1 + length].rstrip(b"\0").decode("latin-1")
        yield i, title, data[offset + 1 + length : offset + size]


def read_pk3(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Files of a Quake-style `.pk3` (a zip)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if not info.is_dir():
                yield info.filename, zf.read(info)
