"""The users file: logins for `glimpse serve`, one ``name:hash`` per line.

Passwords are stored only as werkzeug hashes (scrypt by default). The file is
written atomically (temporary file in the same folder, fsync, rename) with
mode 0600, so a server reading it mid-write sees the old or the new version,
never half of one. Lines the parser does not understand (hand edits, comments)
are kept verbatim on rewrite and grant no login; any such line still makes the
file non-empty, so a damaged file locks the server rather than opening it.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.security import generate_password_hash

from search.errors import GlimpseError

FILE_NAME = "users"
MAX_NAME_LENGTH = 128


class UsersError(GlimpseError):
    """A name or password that cannot be stored; the message is meant for the user."""


def users_path(home: Path, config: Mapping[str, Any]) -> Path:
    """``GLIMPSE_USERS_FILE`` when set, else ``$GLIMPSE_HOME/users``."""
    configured = config.get("GLIMPSE_USERS_FILE")
    return Path(os.path.expanduser(configured)) if configured else Path(home) / FILE_NAME


def check_name(name: str) -> str:
    """A user name HTTP Basic can carry: non-empty, no ':' (the separator), no control characters."""
    if not name:
        raise UsersError("the user name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise UsersError(f"the user name is longer than {MAX_NAME_LENGTH} characters")
    if ":" in name:
        raise UsersError("a user name cannot contain ':'")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise UsersError("a user name cannot contain control, format or unassigned characters")
    if name != name.strip():
        raise UsersError("a user name cannot start or end with a space")
    return name


@dataclass(frozen=True)
class Users:
    """What the file says: name -> hash, and whether a login is required at all."""

    hashes: dict[str, str] = field(default_factory=dict)
    required: bool = False
    skipped: int = 0  # lines that grant no login (malformed)


def _entry(line: str) -> tuple[str, str] | None:
    name, sep, pwhash = line.partition(":")
    if not sep or not name or not pwhash.strip() or "$" not in pwhash:
        return None
    return name, pwhash.strip()


def _meaningful(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def parse(text: str) -> Users:
    hashes: dict[str, str] = {}
    required = False
    skipped = 0
    for line in text.splitlines():
        if not _meaningful(line):
            continue
        required = True
        entry = _entry(line)
        if entry is None:
            skipped += 1
        else:
            hashes[entry[0]] = entry[1]
    return Users(hashes, required, skipped)


def read_text(path: Path) -> str:
    """The file's text ('' when absent); undecodable bytes become U+FFFD and so match no name."""
    try:
        return Path(path).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def load(path: Path) -> Users:
    return parse(read_text(path))


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def add(path: Path, name: str, password: str) -> bool:
    """Store ``name`` with a hash of ``password``; True when it replaced an existing password."""
    check_name(name)
    if not password:
        raise UsersError("the password is empty")
    line = f"{name}:{generate_password_hash(password)}"
    lines = read_text(path).splitlines()
    replaced = False
    out = []
    for old in lines:
        entry = _entry(old) if _meaningful(old) else None
        if entry is not None and entry[0] == name:
            if not replaced:
                out.append(line)
            replaced = True
        else:
            out.append(old)
    if not replaced:
        out.append(line)
    _write_atomically(Path(path), "".join(f"{x}\n" for x in out))
    return replaced


def remove(path: Path, name: str) -> bool:
    """Drop ``name``; False (file untouched) when there is no such user."""
    lines = read_text(path).splitlines()
    kept = [x for x in lines if not (_meaningful(x) and (_entry(x) or ("", ""))[0] == name)]
    if len(kept) == len(lines):
        return False
    _write_atomically(Path(path), "".join(f"{x}\n" for x in kept))
    return True


def names(path: Path) -> list[str]:
    return sorted(load(path).hashes)
