"""Whether a store's index was written by this user, in this very file.

The index is a cache of the manifests that listings, summaries and study tables read instead of
opening 100,000 files. A store handed over by someone else comes with *their* index, whose rows
could say anything (a forged accuracy, an invented tag) while every manifest verifies. So an
index is trusted only when it carries a token that only this user's key can make, bound to the
index file itself (its device and inode, and a random id): a copied, received or replaced index
fails the check and is rebuilt from the verified manifests (or, where it cannot be written, not
read at all). The key is a random secret in this user's config folder, made on first use with
mode 0600; a group that shares stores shares one key file by pointing ``PRUNELAB_INDEX_KEY_FILE``
at it (each user's own key would make each of them rebuild the other's index).

What this does not cover: someone who can write to the store while you use it can edit rows of
an index you wrote, as they can edit manifests and recompute their digests. ``prunelab verify``
compares every row with its manifest; only ``verify --recompute`` catches a forger who
recomputes digests.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

KEY_FILE_ENV = "PRUNELAB_INDEX_KEY_FILE"
_KEY: list[bytes] = []


def key_path() -> Path:
    env = os.environ.get(KEY_FILE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("prunelab")) / "index.key"


def user_key() -> bytes:
    """This user's secret (made on first use); a per-process one where it cannot be stored, so
    that an index is then trusted by no other process (slower, never wrong)."""
    if _KEY:
        return _KEY[0]
    path = key_path()
    key = None
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            fresh = secrets.token_bytes(32)
            with os.fdopen(fd, "w") as fh:
                fh.write(fresh.hex() + "\n")
            key = fresh
        except FileExistsError:  # another process made it meanwhile
            try:
                key = bytes.fromhex(path.read_text().strip())
            except (OSError, ValueError):
                key = None
        except OSError:
            key = None
    if not key or len(key) < 16:
        key = secrets.token_bytes(32)
    _KEY.append(key)
    return key


def token(index: Path, index_id: str) -> str:
    """The token an index at ``index`` (as it is on disk now) with id ``index_id`` must carry."""
    st = os.stat(index)
    message = f"prunelab-index|{st.st_dev}|{st.st_ino}|{index_id}".encode()
    return hashlib.blake2b(message, key=user_key(), digest_size=32).hexdigest()


def new_id() -> str:
    return secrets.token_hex(16)
