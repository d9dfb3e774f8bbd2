"""A keyed digest (HMAC-SHA256) over a directory qgm-ray writes and later hands to a loader that
unpickles: Ray Tune's experiment state (`tuner.pkl`, the trials' state, `error.pkl`, ...).
Unpickling runs whatever code the file names, so `tune --resume` loads only a state that this
user's qgm-ray sealed and that is unchanged since. The key is the user's own: 32 random bytes in
their config directory, readable by them alone, made on first use.

The digest covers every file under the directory, by relative path and content; a symbolic link
anywhere in it cannot be sealed (it would let the loader read a file outside the directory).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from qgm_ray.errors import ConfigError

KEY_BYTES = 32
_HEADER = b"qgm-ray seal 1\n"   # what the digest is of: a change of the scheme makes old seals fail


class SealError(ConfigError):
    """No valid seal: the directory is not loaded. One line."""


def key_path() -> Path:
    """$XDG_CONFIG_HOME/qgm-ray/seal.key, else ~/.config/qgm-ray/seal.key."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "qgm-ray" / "seal.key"


def load_key(create: bool = False) -> bytes:
    """The user's key; made (mode 0600, in a 0700 directory) when `create` and missing."""
    path = key_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise SealError(f"no seal key at {path}: this user's qgm-ray has sealed no sweep here") from None
        data = _make_key(path)
    except OSError as e:
        raise SealError(f"cannot read the seal key {path}: {e.strerror or e}") from None
    if len(data) != KEY_BYTES:
        raise SealError(f"{path} is not a seal key of qgm-ray ({len(data)} bytes, not {KEY_BYTES}); move it away")
    return data


def _make_key(path: Path) -> bytes:
    data = secrets.token_bytes(KEY_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:   # another process made it first: use theirs
        return path.read_bytes()
    except OSError as e:
        raise SealError(f"cannot make the key that seals a sweep's Tune state at {path}: {e.strerror or e}; "
                        f"set XDG_CONFIG_HOME (or HOME) to a writable directory") from None
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return data


def digest(root: Path, key: bytes) -> str:
    """HMAC of every file under `root`, in path order. SealError on a link or a special file."""
    mac = hmac.new(key, _HEADER, hashlib.sha256)
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                raise SealError(f"{p} is a symbolic link: a sealed directory holds none")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise SealError(f"{p} is not a regular file")
            rel = p.relative_to(root).as_posix().encode("utf-8", "surrogateescape")
            mac.update(len(rel).to_bytes(8, "big") + rel + _file_hash(p))
    return mac.hexdigest()


def _file_hash(p: Path) -> bytes:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def seal(root: Path, seal_file: Path, key: bytes) -> bool:
    """Write the digest of `root` to `seal_file` (whole, by rename). False, and no seal left,
    when `root` cannot be sealed: a later verify refuses it."""
    seal_file = Path(seal_file)
    tmp = seal_file.with_name(seal_file.name + ".tmp")
    try:
        text = digest(root, key) + "\n"
        tmp.write_text(text)
        os.replace(tmp, seal_file)
        return True
    except (SealError, OSError):
        for p in (tmp, seal_file):
            try:
                p.unlink()
            except OSError:
                pass
        return False


def verify(root: Path, seal_file: Path, what: str) -> None:
    """Return when `seal_file` holds the digest of `root` under this user's key; else SealError,
    one line that begins with `what` and says the directory is not loaded."""
    refuse = (f"{what}: {root} carries no valid seal of this user's qgm-ray ({{why}}); it is not loaded, "
              f"since loading it can run code")
    try:
        key = load_key(create=False)
    except SealError as e:
        raise SealError(refuse.format(why=str(e))) from None
    try:
        expected = Path(seal_file).read_text().strip()
    except OSError:
        raise SealError(refuse.format(why=f"no {Path(seal_file).name}")) from None
    except UnicodeDecodeError:
        raise SealError(refuse.format(why=f"{Path(seal_file).name} is not a seal")) from None
    try:
        actual = digest(root, key)
    except SealError as e:
        raise SealError(refuse.format(why=str(e))) from None
    except OSError as e:
        raise SealError(refuse.format(why=f"unreadable: {e.strerror or e}")) from None
    if not hmac.compare_digest(actual, expected):
        raise SealError(refuse.format(why="written by another program or user, or changed since"))
