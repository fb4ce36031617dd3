"""Checking and maintaining a store: ``verify``, ``repair`` and ``gc``.

What ``verify`` proves (docs/experiments.md, "What verify proves"): every file that can change
what prunelab prints is what prunelab wrote — manifests (digest, identity, structure), packs
(exact byte coverage, every tensor re-hashed), study documents and probe results (digests and
identities), and the index (its integrity and every row it serves, compared with the manifest it
was made from) — and nothing in the store is a link or a special file. A digest is a checksum, not
a signature: someone who recomputes digests after an edit is caught only by re-execution
(``verify --recompute``).

``repair`` moves what ``verify`` (or a recomputation) found wrong into a new folder of
``quarantine/`` — never deleting, never overwriting an earlier quarantine, every move fsynced —
with the states computed from a state whose *content* is wrong, and the probes of every state it
moves, so a second repair finds nothing more to do. ``gc`` and ``repair`` hold the store's
exclusive lock; runs hold it shared (:meth:`Store.writing`), so neither ever removes or moves what
a live run has written or is about to reference.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StoreError
from ..files import fsync_path
from .containment import INDEX_FILES, TOP_DIRECTORIES, UnsafeFile, check_directory, is_hash, is_link_or_special

if TYPE_CHECKING:
    from .store import Store


@dataclass(frozen=True)
class Problem:
    """Something ``verify`` found: the states concerned (none for a stray file or the index), one
    line saying what and where, the files ``repair`` moves into quarantine, and whether the states
    computed from these must go too (``below``: their content, not just their record, is wrong)."""

    states: tuple[str, ...]
    message: str
    files: tuple[Path, ...]
    below: bool = False

    @property
    def state(self) -> str:
        return self.states[0] if self.states else ""


def _file_problem(path: Path, why: str) -> Problem:
    return Problem((), f"{path}: {why}", (path,))


# ---------------------------------------------------------------- verify


def verify(store: "Store") -> list[Problem]:
    """Every problem of the store, one per damaged thing (a pack shared by many states is one)."""
    from .store import state_refs

    problems = _strange_files(store.root)
    damaged: dict[Path, str] = {}
    good = {m["hash"]: m for m in store.manifests(damaged=damaged)}
    for path, why in damaged.items():
        problems.append(Problem((path.stem,), f"{path}: {why}", (path,)))
    present = set(good) | {path.stem for path in damaged}
    waiting = quarantined_states(store.root)  # moved aside by a repair: the next run recomputes them
    for h, m in good.items():
        for ref in filter(None, [m.get("parent")] + state_refs(m["recipe"]["params"])):
            if ref not in present and ref not in waiting:
                problems.append(Problem((h,), f"{store.manifest_path(h)}: refers to state {ref[:12]}, which is "
                                              "not in the store", (store.manifest_path(h),), below=True))
    problems += _tensor_problems(store, good)
    problems += stale_rewinds(store, good)
    problems += _document_problems(store, set(good))
    problems += _probe_problems(store, present)
    problems += _index_problems(store, good)
    return sorted(problems, key=lambda p: p.message)


def quarantined_states(root: Path) -> set[str]:
    """States whose manifests an earlier repair moved into quarantine, waiting for the next run to
    recompute them: a reference to one is not a problem (what was computed from it was verified
    when it was computed). Damaged by definition, so they are known by name only; a study point
    that is missing is reported whatever quarantine holds (:func:`_document_problems`)."""
    folder = root / "quarantine"
    found: set[str] = set()
    if is_link_or_special(folder) or not folder.is_dir():
        return found
    try:
        for repair_folder in folder.iterdir():
            states = repair_folder / "states"
            if is_link_or_special(repair_folder) or not repair_folder.is_dir() or is_link_or_special(states) \
                    or not states.is_dir():
                continue
            found.update(p.stem for p in states.iterdir() if p.suffix == ".json" and is_hash(p.stem))
    except OSError:  # an unreadable quarantine excuses nothing more
        pass
    return found


def _strange_files(root: Path) -> list[Problem]:
    """Links, FIFOs, sockets and devices anywhere in the store (prunelab makes none), folders where
    files belong and files where folders belong (``blobs/<xx>``, ``probes/<state>``, lock files),
    folders that cannot be read, and an index file with other hard links (writing it would change
    another file). quarantine/ is looked at, not into: what repair moved is there."""
    problems = []
    for name in TOP_DIRECTORIES:
        path = root / name
        why = is_link_or_special(path)
        if why is None and path.exists() and not path.is_dir():
            why = "a file where prunelab keeps a folder"
        if why:
            problems.append(_file_problem(path, f"is {why}; prunelab never makes one here"))
    for name in INDEX_FILES:
        path = root / name
        why = is_link_or_special(path)
        if why is None and path.is_dir():
            why = "a folder"
        elif why is None and path.exists() and os.lstat(path).st_nlink > 1:
            why = "a file with other hard links (writing it would change another file)"
        if why:
            problems.append(_file_problem(path, f"is {why}; prunelab never makes one here"))
    for name in ("blobs", "states", "probes", "locks", "documents"):
        top = root / name
        if is_link_or_special(top) or not top.is_dir():
            continue

        def unreadable(exc: OSError) -> None:
            problems.append(_file_problem(Path(exc.filename), f"cannot be read ({exc.strerror}); prunelab makes "
                                                              "every folder of a store readable by its owner"))

        for folder, dirs, files in os.walk(top, onerror=unreadable, followlinks=False):
            depth = len(Path(folder).relative_to(top).parts)
            for entry in dirs + files:
                path = Path(folder) / entry
                why = is_link_or_special(path)
                if why:
                    problems.append(_file_problem(path, f"is {why}; prunelab never makes one in a store"))
                elif name in ("blobs", "probes") and depth == 0 and entry in files:
                    problems.append(_file_problem(path, f"is a file where prunelab keeps a folder of {name}"))
                elif name == "locks" and entry in dirs:
                    problems.append(_file_problem(path, "is a folder where prunelab keeps a lock file"))
    return problems


def _tensor_problems(store: "Store", good: dict[str, dict]) -> list[Problem]:
    """Each pack or one-tensor blob that finished states reference, checked once: missing, unreadable,
    not exactly covered by its header, or content that does not match its name; one problem per
    file, naming the states that use it."""
    from .store import tensor_entries

    users: dict[str, set[str]] = {}
    members_needed: dict[str, set[str]] = {}
    for h, m in good.items():
        if m.get("status") != "done":
            continue
        for entry in tensor_entries(m):
            name = entry.get("pack") or entry["blob"]
            users.setdefault(name, set()).add(h)
            if "pack" in entry:
                members_needed.setdefault(name, set()).add(entry["blob"])
    problems = []
    for name, states in sorted(users.items()):
        path = store.blob_path(name)
        if name in members_needed:
            why, members = check_pack(store, name)
            missing = members_needed[name] - members
            if why is None and missing:
                why = f"tensor {sorted(missing)[0][:12]} missing from this pack"
        else:
            why = check_blob(store, name)
        if why is None:
            continue
        states = tuple(sorted(states))
        shown = ", ".join(s[:12] for s in states[:3]) + (f" and {len(states) - 3} more" if len(states) > 3 else "")
        files = tuple(store.manifest_path(s) for s in states) + ((path,) if os.path.lexists(path) else ())
        problems.append(Problem(states, f"{path}: {why}; used by {len(states)} state{'s' * (len(states) > 1)} "
                                        f"({shown})", files))
    return problems


def check_pack(store: "Store", name: str) -> tuple[str | None, set[str]]:
    """(Why a pack cannot be trusted or None, the content hashes it holds)."""
    from .store import file_tensor_digests, pack_name

    path = store.blob_path(name)
    try:
        check_directory(path.parent)
        digests = file_tensor_digests(path)
    except FileNotFoundError:
        return "blob missing (referenced by a manifest)", set()
    except UnsafeFile as exc:
        return str(exc).removeprefix(f"{path}: "), set()
    except (OSError, ValueError) as exc:
        return f"unreadable blob ({exc})", set()
    if any(key != digest for key, digest in digests.items()) or pack_name(digests) != name:
        return "blob is corrupted (content does not match its hash)", set()
    return None, set(digests)


def check_blob(store: "Store", digest: str) -> str | None:
    """Why a one-tensor blob (stores before format 3) cannot be trusted, or None."""
    from .store import file_tensor_digests

    path = store.blob_path(digest)
    try:
        check_directory(path.parent)
        digests = file_tensor_digests(path)
    except FileNotFoundError:
        return "blob missing (referenced by a manifest)"
    except UnsafeFile as exc:
        return str(exc).removeprefix(f"{path}: ")
    except (OSError, ValueError) as exc:
        return f"unreadable blob ({exc})"
    if set(digests) != {"t"}:
        return "unreadable blob (not a one-tensor blob)"
    if digests["t"] != digest:
        return "blob is corrupted (content does not match its hash)"
    return None


_KEEP_PARENT_TENSORS = ("Prune", "RandomPruneLike")


def stale_rewinds(store: "Store", good: dict[str, dict]) -> list[Problem]:
    """Rewinds that do not hold their target's weights and optimizer state, and every state below them.

    A Rewind copies its target's tensors, so their content hashes must be the target's: checked
    from the manifests alone. A training that changes, in place, the optimizer state of a parent
    still held in memory makes a rewind computed from it in the same process store the target's
    *final* optimizer state (its identity is unchanged, so a rerun would reuse it); stores written
    by an older prunelab can hold such rewinds (docs/architecture.md).
    """
    from .store import state_refs

    def tensors(m: dict) -> tuple:
        o = m.get("optimizer") or {}
        return ({k: e.get("blob") for k, e in m.get("weights", {}).items()},
                {k: e.get("blob") for k, e in o.get("tensors", {}).items()}, o.get("values"))

    stale: dict[str, str] = {}
    for h, m in good.items():
        to = (m.get("recipe", {}).get("params") or {}).get("to")
        target = good.get(to.get("$state")) if m["recipe"]["type"] == "Rewind" and isinstance(to, dict) else None
        if m.get("status") == "done" and target is not None and target.get("status") == "done" \
                and tensors(m) != tensors(target):
            stale[h] = (f"{store.manifest_path(h)}: rewound to state {to['$state'][:12]} but holds other weights or "
                        "optimizer state than it (computed before the fix of 2026-11-27); `prunelab verify "
                        "--repair` moves it and the states below it aside and the next run recomputes them")
        # a prune and a random-pruning control change masks only: their weights and optimizer state are
        # their parent's (a training that changes its parent's optimizer state in place makes a prune
        # computed after it in the same process store another; older stores can hold such prunes)
        parent = good.get(m.get("parent"))
        if m["recipe"]["type"] in _KEEP_PARENT_TENSORS and m.get("status") == "done" and parent is not None \
                and parent.get("status") == "done" and tensors(m) != tensors(parent):
            stale[h] = (f"{store.manifest_path(h)}: a {m['recipe']['type']} of state {parent['hash'][:12]} but holds "
                        "other weights or optimizer state than it; `prunelab verify --repair` moves it and the states "
                        "below it aside and the next run recomputes them")
    if stale:
        refs = {h: [m.get("parent")] + state_refs(m["recipe"]["params"]) for h, m in good.items()}
        grew = True
        while grew:  # until no state computed from a stale one is left unmarked (references may point deeper)
            grew = False
            for h, used in refs.items():
                bad = next((r for r in used if r in stale), None)
                if h not in stale and bad is not None:
                    stale[h] = f"{store.manifest_path(h)}: computed from state {bad[:12]}, which is stale (see that state)"
                    grew = True
    return [Problem((h,), why, (store.manifest_path(h),), below=True) for h, why in stale.items()]


def _document_problems(store: "Store", present: set[str]) -> list[Problem]:
    problems = []
    folder = store.root / "documents"
    if is_link_or_special(folder) or not folder.is_dir():
        return problems
    for path in sorted(folder.iterdir()):
        if path.suffix != ".json" or is_link_or_special(path):
            continue  # links are reported by _strange_files; temporary files are not documents
        try:
            document = store.read_document(path)
        except StoreError as exc:
            problems.append(_file_problem(path, str(exc).removeprefix(f"{path}: ")
                                          + "; rerun the study's spec to write it again (nothing is recomputed)"))
            continue
        points = document.get("points")
        if not path.name.startswith("study-") or not isinstance(points, list):
            continue
        named = [p.get("hash") if isinstance(p, dict) else None for p in points]
        if not all(is_hash(h) for h in named):
            problems.append(_file_problem(path, "a point names something other than a state hash"))
            continue
        missing = sorted({h for h in named if h not in present})
        if missing:
            shown = ", ".join(h[:12] for h in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            problems.append(Problem(tuple(missing), f"{path}: {len(missing)} of its points are not in the store "
                                                    f"({shown}); `prunelab run` of the study's spec computes them",
                                    ()))
    return problems


def _probe_problems(store: "Store", present: set[str]) -> list[Problem]:
    problems = []
    folder = store.root / "probes"
    if is_link_or_special(folder) or not folder.is_dir():
        return problems
    for state_folder in sorted(folder.iterdir()):
        if is_link_or_special(state_folder) or not state_folder.is_dir():
            continue  # reported by _strange_files
        if not is_hash(state_folder.name):
            problems.append(_file_problem(state_folder, "is not a state's probe folder"))
            continue
        try:
            entries = sorted(state_folder.iterdir())
        except OSError:
            continue  # an unreadable folder: reported by _strange_files
        if state_folder.name not in present and state_folder.name not in quarantined_states(store.root):
            problems.append(_file_problem(state_folder, f"probes of state {state_folder.name[:12]}, which is not in "
                                                        "the store"))
            continue
        for path in entries:
            if path.suffix != ".json" or is_link_or_special(path):
                continue
            try:
                store.read_probe(path)
            except StoreError as exc:
                problems.append(_file_problem(path, str(exc).removeprefix(f"{path}: ")
                                              + "; the next run measures it again"))
    return problems


def _index_problems(store: "Store", good: dict[str, dict]) -> list[Problem]:
    """The index is a cache of the manifests: it must be a sound SQLite file of prunelab's schema, and
    every row it serves (listing, summary, full row) must be what its manifest gives."""
    from .store import expected_index_rows, file_stamp
    from .summary import SUMMARY_VERSION

    path = store.root / "index.sqlite"
    if is_link_or_special(path) or not path.is_file():
        return []  # absent: made on the next write; a link: reported by _strange_files
    try:
        con = store.index_reader()
    except sqlite3.Error as exc:
        return [_file_problem(path, f"unreadable index ({exc}); it is a cache: --repair rebuilds it")]
    try:
        check = con.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            return [_file_problem(path, f"damaged index ({str(check[0][0])[:80]}); it is a cache: --repair "
                                        "rebuilds it")]
        tables = {name: [c[1] for c in con.execute(f"PRAGMA table_info({name})")]
                  for name in ("states", "listing", "summaries")}
        schema = store.index_schema()
        wrong = [name for name, columns in tables.items() if columns and columns != schema[name]]
        if wrong:
            return [_file_problem(path, f"index tables of another schema ({', '.join(wrong)}); it is a cache: "
                                        "--repair rebuilds it")]
        rows = {name: {r[0]: r for r in con.execute(f"SELECT * FROM {name}")} if tables[name] else {}
                for name in tables}
    except sqlite3.Error as exc:
        return [_file_problem(path, f"damaged index ({exc}); it is a cache: --repair rebuilds it")]
    finally:
        con.close()
    differ = []
    for h, m in good.items():
        try:
            stamp = file_stamp(os.stat(store.manifest_path(h)))
        except OSError:
            continue
        want = expected_index_rows(m, stamp)
        listed, summary = rows["listing"].get(h), rows["summaries"].get(h)
        # a row made from an older version of the file, or by an older summary version, is not
        # served (the next listing replaces it); one made from this file must be what it gives
        if listed is not None and listed[1] == stamp and (
                _same(listed, want["listing"]) is False or _same(rows["states"].get(h), want["states"]) is False):
            differ.append(h)
        elif summary is not None and summary[1] == stamp and _summary_version(summary[2]) == SUMMARY_VERSION \
                and not _same(summary, want["summaries"]):
            differ.append(h)
    if not differ:
        return []
    shown = ", ".join(h[:12] for h in differ[:3]) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")
    return [Problem((), f"{path}: {len(differ)} row{'s' * (len(differ) > 1)} differ from their manifests ({shown}): "
                        "edited, or written by another version of prunelab; the index is a cache: --repair rebuilds it", ())]


# ---------------------------------------------------------------- repair


def _same(have, want) -> bool | None:
    """Whether an index row holds what its manifest gives (None: no row). JSON columns are compared
    by content: the same manifest read back from disk lists its keys in another order."""
    if have is None:
        return None
    if len(have) != len(want):
        return False
    return all(_canonical(a) == _canonical(b) for a, b in zip(have, want))


def _canonical(value):
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    return value


def _summary_version(text) -> object:
    try:
        return json.loads(text).get("version")
    except (TypeError, ValueError, AttributeError):
        return None


def repair(store: "Store", problems: list[Problem]) -> tuple[Path, list[Path]]:
    """Move every file of ``problems`` (and, for problems marked ``below``, every state computed from
    theirs; and the probes of every state moved) into a new folder ``quarantine/<time>[-n]/``, at
    the same relative path; then rebuild the index. Nothing is deleted or overwritten; each move is
    fsynced. The next run recomputes exactly the states whose manifests moved."""
    from .store import state_refs

    store._check_writable("repair")
    quarantine = _quarantine(store.root)
    folder = _new_folder(quarantine)
    early = []
    lock = store.root / "locks" / "__store__.lock"
    if "locks" in store.unusable:  # the store's lock lives there: moved first (no run writes to such a store)
        os.replace(store.root / "locks", folder / "locks")
        early.append(folder / "locks")
        fsync_path(store.root)
        store.unusable.discard("locks")
    elif os.path.lexists(lock) and not lock.is_file() or is_link_or_special(lock):
        (folder / "locks").mkdir()
        os.replace(lock, folder / "locks" / lock.name)
        early.append(folder / "locks" / lock.name)
        fsync_path(lock.parent)
    with store.exclusive("repair"):
        files = list(dict.fromkeys(p for problem in problems for p in problem.files))
        below = {s for problem in problems if problem.below for s in problem.states}
        if below:
            children: dict[str, list[str]] = {}
            for m in store.manifests(damaged={}):
                for ref in filter(None, [m.get("parent")] + state_refs(m["recipe"]["params"])):
                    children.setdefault(ref, []).append(m["hash"])
            stack = list(below)
            while stack:
                for child in children.get(stack.pop(), []):
                    if child not in below:
                        below.add(child)
                        stack.append(child)
                        files.append(store.manifest_path(child))
        moved_states = {p.stem for p in files if p.parent == store.root / "states" and is_hash(p.stem)}
        files += [store.root / "probes" / h for h in sorted(moved_states) if os.path.lexists(store.root / "probes" / h)]
        moved, touched = early, {folder}
        for path in dict.fromkeys(files):
            if path == quarantine or (early and path in (store.root / "locks", lock)) or not os.path.lexists(path):
                continue
            relative = _inside(store.root, path)
            if relative is None:
                continue  # never reached: every path of a problem is built from checked names
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(target):
                raise StoreError(f"{target}: already in quarantine; nothing was overwritten")
            os.replace(path, target)  # moves a link itself, never what it points to
            moved.append(target)
            touched.update({path.parent, target.parent})
        for directory in touched:
            fsync_path(directory)
        fsync_path(quarantine)
        moved += store.rebuild_index(folder)  # a damaged index goes to the same folder
        if not moved:
            folder.rmdir()
    return folder, moved


def _inside(root: Path, path: Path) -> Path | None:
    """``path`` relative to ``root`` when it lies inside it through real folders only, else None."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        return None
    if ".." in relative.parts or not relative.parts:
        return None
    current = root
    for part in relative.parts[:-1]:
        current = current / part
        if is_link_or_special(current):
            return None
    return relative


def _quarantine(root: Path) -> Path:
    """The store's quarantine folder, a real folder: a link or file in its place (prunelab never
    makes one) is itself moved into the new quarantine by the caller's problem list, so here it is
    first renamed out of the way."""
    folder = root / "quarantine"
    if is_link_or_special(folder) or (folder.exists() and not folder.is_dir()):
        aside = root / f"quarantine.moved-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        os.replace(folder, aside)  # renames the link itself
        folder.mkdir()
        target = _new_folder(folder)
        os.replace(aside, target / "quarantine")
        fsync_path(root)
        fsync_path(target)
    folder.mkdir(exist_ok=True)
    return folder


def _new_folder(quarantine: Path) -> Path:
    """A folder of ``quarantine`` that did not exist before (two repairs in one second never share one)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1, 10_000):
        folder = quarantine / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise StoreError(f"{quarantine}: no free quarantine folder name for {stamp}")


# ---------------------------------------------------------------- gc

# gc leaves younger temporary files alone: a run of an older prunelab, which does not take the
# store's lock, may be publishing them (a state is in place within seconds of being written)
STALE_TEMPORARY_SECONDS = 3600


def collect_garbage(store: "Store", dry_run: bool = False, on_wait=None) -> tuple[int, int]:
    """Remove packs and blobs no manifest references, and temporary files older than an hour, under
    the store's exclusive lock (so never beside a run). Links and special files are never followed
    or removed (``verify`` reports them). Returns (files, bytes)."""
    store._check_writable("collect garbage")
    with store.exclusive("collect garbage", on_wait):
        try:  # raises on a damaged manifest: its blobs must not look unreferenced
            keep = referenced_pack_names(store)
        except StoreError as exc:
            raise StoreError(f"{exc}; gc removes nothing while a manifest is damaged") from None
        keep |= _quarantined_packs(store.root)  # repair promises to delete nothing: a move can be undone
        files = n_bytes = 0
        now = time.time()
        for path in _regular_files(store.root / "blobs", depth=2) + _regular_files(store.root / "states", depth=1):
            name = path.name
            if name.endswith(".tmp"):
                if now - path.lstat().st_mtime < STALE_TEMPORARY_SECONDS:
                    continue
            elif not (path.parent.parent.name == "blobs" and name.endswith(".safetensors")
                      and is_hash(name.removesuffix(".safetensors")) and name.removesuffix(".safetensors") not in keep
                      and path.parent.name == name[:2]):
                continue
            try:
                size = path.lstat().st_size
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:  # published or removed meanwhile
                continue
            files += 1
            n_bytes += size
        if files and not dry_run:
            fsync_path(store.root / "blobs")
    return files, n_bytes


def _quarantined_packs(root: Path) -> set[str]:
    """The packs and blobs that manifests moved into quarantine reference (read, not verified:
    keeping a file is always safe)."""
    from .containment import read_json
    from .store import tensor_entries

    keep = set()
    for path in _regular_files(root / "quarantine", depth=3):
        if path.parent.name != "states" or path.suffix != ".json":
            continue
        try:
            names = [e.get("pack") or e.get("blob") for e in tensor_entries(read_json(path))]
        except (OSError, ValueError, StoreError, AttributeError, TypeError, KeyError):
            continue
        keep.update(name for name in names if is_hash(name))
    return keep


def _regular_files(top: Path, depth: int) -> list[Path]:
    """Regular files ``depth`` levels below ``top``, through real folders only (links are skipped,
    and so are folders that cannot be read)."""
    if is_link_or_special(top) or not top.is_dir():
        return []

    def scan(folder: Path) -> list:
        try:
            with os.scandir(folder) as entries:
                return list(entries)
        except OSError:
            return []

    level = [top]
    for _ in range(depth - 1):
        level = [Path(e.path) for d in level for e in scan(d) if e.is_dir(follow_symlinks=False)]
    return [Path(e.path) for d in level for e in scan(d) if e.is_file(follow_symlinks=False)]


def referenced_pack_names(store: "Store") -> set[str]:
    from .store import tensor_entries

    return {e.get("pack") or e["blob"] for m in store.manifests() for e in tensor_entries(m)}


def stored_files(store: "Store") -> dict[str, Path]:
    """Every pack or blob file of the store by name (through real folders only)."""
    return {p.name.removesuffix(".safetensors"): p for p in _regular_files(store.root / "blobs", depth=2)
            if p.name.endswith(".safetensors")}

