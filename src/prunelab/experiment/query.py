"""Reading a finished store without the code that defined it."""

from __future__ import annotations

import os
from collections import OrderedDict
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .store import Store, StoreError, state_refs
from .summary import flatten  # noqa: F401 (re-exported: callers import it from here)

if TYPE_CHECKING:  # torch is imported only by what loads tensors: listing a store stays fast
    from torch import nn

    from .snapshot import Snapshot


class Results:
    """A read-only view of a store: states, lineage, tables, models.

    Listing and filtering read the store's listing (``Store.listing``: one short row per state,
    from the SQLite index where it is current, every other manifest verified now); a state's full
    manifest is read and verified from its file when it is first asked for, and kept in a
    bounded cache. ``ls``, ``tree`` and filters on 100,000 states therefore never open the
    manifests (docs/benchmarks/store_scale.md).
    """

    CACHE = 4096  # full manifests kept in memory (a report walks each state about once)

    def __init__(self, path: str | Path, *, writable: bool = False, maintenance: bool = False):
        path = Path(path)
        if not (path / "states").is_dir() and not (maintenance and os.path.islink(path / "states")):
            raise StoreError(f"{path}: not a prunelab store (no states/ folder)")
        # reading writes no state, lock or tensor (a read-only or another user's store works); where
        # the directory is writable, the listing cache in the index is brought up to date.
        # ``maintenance`` (verify, repair): opened even when links sit where prunelab keeps its folders.
        self.store = Store(path, create=False, read_only=None, maintenance=maintenance) if writable \
            else _reader(path, maintenance)
        if maintenance:  # verify looks at the index as it is: it never rebuilds it behind the user's back
            self.store.cache_writable = False
        # a damaged manifest is left out (and listed) rather than making the whole store unreadable
        self.damaged: dict[Path, str] = {}
        self._rows = self.store.listing(damaged=self.damaged)
        self._full: OrderedDict[str, dict] = OrderedDict()
        self._study_records: list[dict] | None = None  # analysis.tables.study_records, read once per view

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, state_hash: str) -> bool:
        return state_hash in self._rows

    def _manifest(self, state_hash: str) -> dict:
        m = self._full.get(state_hash)
        if m is not None:
            self._full.move_to_end(state_hash)
            return m
        m = self.store.manifest(state_hash)  # verified: digest, name and identity
        if m is None:
            raise StoreError(f"{self.store.root}: state {state_hash[:12]} was removed while reading the store")
        self._full[state_hash] = m
        while len(self._full) > self.CACHE:
            self._full.popitem(last=False)
        return m

    def resolve(self, prefix: str) -> str:
        """The full hash of the state a unique prefix (or the full hash) names."""
        if prefix in self._rows:  # a full hash: one dict lookup (reports call this per state)
            return prefix
        hits = [h for h in self._rows if h.startswith(prefix)]
        if not hits:
            raise StoreError(f"{self.store.root}: no state {prefix!r}")
        if len(hits) > 1:
            raise StoreError(f"{self.store.root}: {len(hits)} states start with {prefix!r}; give more characters")
        return hits[0]

    def get(self, prefix: str) -> dict:
        """The manifest whose hash starts with ``prefix`` (must be unique)."""
        return self._manifest(self.resolve(prefix))

    def row(self, prefix: str) -> dict:
        """The short listing row of a state (see ``Store.listing``)."""
        return self._rows[self.resolve(prefix)]

    def rows(self, *, tag: str | None = None, recipe: str | None = None, depth: int | None = None,
             status: str | None = None, where: dict | None = None) -> list[dict]:
        """Listing rows matching every given filter (``where``: dotted param → value), in display
        order (depth, then finishing time); no manifest is opened."""
        out = []
        for r in self._rows.values():
            if tag is not None and tag not in r["tags"]:
                continue
            if recipe is not None and r["recipe"] != recipe:
                continue
            if depth is not None and r["depth"] != depth:
                continue
            if status is not None and r["status"] != status:
                continue
            if where:
                params = flatten(r["params"])
                if any(params.get(k) != v for k, v in where.items()):
                    continue
            out.append(r)
        return sorted(out, key=lambda r: (r["depth"] or 0, r["finished"] or 0))

    def summaries(self, hashes) -> dict[str, dict]:
        """Each state's summary (:func:`~prunelab.experiment.summary.state_summary`: scalar metrics,
        per-class table, percent kept), from the index where it is current; what study tables read
        instead of the full manifests. States not in the store are left out."""
        stamps = {h: self._rows[h]["stamp"] for h in dict.fromkeys(hashes) if h in self._rows}
        return self.store.summaries(stamps, damaged=self.damaged)

    def each_summary(self, hashes, chunk: int = 1000) -> Iterator[dict | None]:
        """:meth:`summaries` of ``hashes`` one by one, in their order (None for a state not in the
        store), fetched ``chunk`` at a time: memory does not grow with the store."""
        hashes = iter(hashes)
        while part := list(islice(hashes, chunk)):
            found = self.summaries(part)
            yield from (found.get(h) for h in part)

    def states(self, **filters) -> list[dict]:
        """Full (verified) manifests matching the filters of :meth:`rows`."""
        return [self._manifest(r["hash"]) for r in self.rows(**filters)]

    def children(self, state_hash: str) -> list[dict]:
        return [self._manifest(r["hash"]) for r in self.rows() if r["parent"] == state_hash]

    def _row_lineage(self, state_hash: str) -> list[dict]:
        chain, node = [], self._rows[self.resolve(state_hash)]
        while node is not None:
            chain.append(node)
            parent = node["parent"]
            node = self._rows.get(parent) if parent else None
            if parent and node is None:
                raise StoreError(f"state {chain[-1]['hash'][:12]}: parent {parent[:12]} is not in the store")
        return chain[::-1]

    def lineage(self, state_hash: str) -> list[dict]:
        """Manifests from the root to the state, with the recipe of each step."""
        return [self._manifest(r["hash"]) for r in self._row_lineage(state_hash)]

    def snapshot(self, state_hash: str) -> Snapshot:
        return self.store.load(self.get(state_hash)["hash"])

    def load_model(self, state_hash: str) -> nn.Module:
        """The state's model as a torch module, masks attached with torch's pruning."""
        return self.snapshot(state_hash).model()

    def probes(self, state_hash: str) -> list[dict]:
        """The state's verified probe results; a damaged one is left out (and listed in ``damaged``)."""
        return self.store.probes(self.get(state_hash)["hash"], damaged=self.damaged)

    def to_frame(self, **filters):
        """One row per state (those matching the filters of :meth:`rows`): identity, lineage root,
        params and scalar metrics flattened. Read from the listing and the summaries in the index
        (no manifest is opened where they are current) and each state's probes."""
        import pandas as pd

        rows = []
        selected = self.rows(**filters)
        for r, s in zip(selected, self.each_summary(r["hash"] for r in selected)):
            if s is None:  # removed or damaged since the listing was read
                continue
            rp = self._row_lineage(r["hash"])[0]["params"]
            row = {
                "hash": r["hash"], "parent": r["parent"], "depth": r["depth"] or 0, "recipe": r["recipe"],
                "label": r["label"], "status": r["status"], "tags": ",".join(r["tags"]),
                "dataset": s["dataset"] or rp.get("dataset"), "model": rp.get("model"), "seed": rp.get("seed"),
                "iteration": s["iteration"], "seconds": r["seconds"], "kept": s["kept"],
            }
            row.update({f"param.{k}": v for k, v in flatten(r["params"]).items()})
            row.update({f"metric.{k}": v for k, v in s["scalars"].items()})
            for probe in self.store.probes(r["hash"], damaged=self.damaged):
                label = probe.get("label", "probe").replace(" ", "_")
                row.update({f"probe.{label}.{k}": v for k, v in flatten(probe.get("result") or {}).items()})
            rows.append(row)
        return pd.DataFrame(rows)

    # ---------------------------------------------------------------- rendering

    @staticmethod
    def _label(r: dict, markup: bool = True) -> str:
        from rich.markup import escape

        from ..errors import printable

        esc = (lambda text: escape(printable(text))) if markup else printable  # store text: no control codes
        text = f"{esc(r['label'])} [dim]{r['hash'][:10]}[/]" if markup else f"{esc(r['label'])} {r['hash'][:10]}"
        bits = []
        if r["headline"]:
            bits.append(f"test {r['headline']}")
        if r["sparsity"] is not None:
            bits.append(f"sparsity {r['sparsity']:.3f}")
        if r["tags"]:
            bits.append("tags " + esc(",".join(r["tags"])))
        if r["status"] != "done":
            error = f"{r['status']}: {esc(r['error'] or '')}"
            bits.append(f"[red]{error}[/]" if markup else error)
        return text + (" — " + "; ".join(bits) if bits else "")

    def _forest(self, collapse: bool) -> list[tuple[dict, list]]:
        """The roots as ``(row, children)`` nodes, each child a node too; see :meth:`tree`."""
        return list(self._trees(collapse)[1])

    def _trees(self, collapse: bool) -> tuple[int, Iterator[tuple[dict, list]]]:
        """(how many roots, their nodes made one root at a time): a page that shows the first lines
        of a 100,000-state tree walks only the subtrees it shows."""
        children: dict[str, list[dict]] = {}
        rows = self.rows()
        for r in rows:  # one pass, already in display order
            children.setdefault(r["parent"], []).append(r)
        roots = [r for r in rows if not r["depth"]]

        def heights(root) -> dict[str, int]:
            """Each state's height in ``root``'s subtree (1 for a leaf), leaves first."""
            order, stack = [], [root]
            while stack:
                r = stack.pop()
                order.append(r)
                stack.extend(children.get(r["hash"], []))
            height: dict[str, int] = {}
            for r in reversed(order):
                height[r["hash"]] = 1 + max((height[c["hash"]] for c in children.get(r["hash"], [])), default=0)
            return height

        def full(r):
            return (r, [full(c) for c in children.get(r["hash"], [])])

        def chain(first, height):
            """``first`` heads a chain: its continuation (each state's deepest child) is listed under
            it at one level; a side branch heads its own chain under the line it branches from."""
            head = line = (first, [])
            r = first
            while True:
                kids = children.get(r["hash"], [])
                follow = max(kids, key=lambda c: height[c["hash"]], default=None)
                for child in kids:
                    if child is not follow:
                        line[1].append(chain(child, height))
                if follow is None:
                    return head
                line = (follow, [])
                head[1].append(line)
                r = follow

        return len(roots), ((chain(root, heights(root)) if collapse else full(root)) for root in roots)

    def tree(self, collapse: bool = True):
        """A rich Tree of the whole store (one per root).

        ``collapse`` (default): a chain is drawn at one level — each state's deepest child
        (the one whose subtree goes furthest: the next round of an IMP branch) follows it on
        the next line at the same indentation, and only the side branches (controls) nest —
        so a 20-round study is 20 lines deep, not 60 levels. ``collapse=False`` nests every
        child under its parent.
        """
        from rich.tree import Tree

        top = Tree(self.tree_title())

        def add(parent, node):
            line = parent.add(self._label(node[0]))
            for child in node[1]:
                add(line, child)

        for node in self._forest(collapse):
            add(top, node)
        return top

    def tree_title(self) -> str:
        from rich.markup import escape

        return f"[bold]{escape(str(self.store.root))}[/] ({len(self)} states)"

    def tree_lines(self, collapse: bool = True, markup: bool = True) -> Iterator[str]:
        """The lines of :meth:`tree` (rich markup, or plain text; the same guides), generated one
        at a time: a store of 100,000 states prints without building a renderable of 100,000 nodes."""
        yield self.tree_title() if markup else f"{self.store.root} ({len(self)} states)"
        count, trees = self._trees(collapse)
        for index, tree in enumerate(trees):
            stack = [(tree, "", index == count - 1)]
            while stack:
                (row, kids), prefix, last = stack.pop()
                yield f"{prefix}{'└── ' if last else '├── '}{self._label(row, markup)}"
                below = prefix + ("    " if last else "│   ")
                stack.extend((kid, below, i == len(kids) - 1) for i, kid in reversed(list(enumerate(kids))))

    def dot(self) -> str:
        """Graphviz DOT: solid edges parent → child, dashed edges for references."""
        lines = ["digraph prunelab {", '  node [shape=box, fontname="Helvetica", fontsize=10];']
        for r in self.rows():
            label = r["label"].replace('"', "'")
            if r["headline3"]:
                label += f"\\n{r['headline3']}"
            color = "" if r["status"] == "done" else ", color=red"
            lines.append(f'  "{r["hash"][:12]}" [label="{label}\\n{r["hash"][:8]}"{color}];')
            if r["parent"]:
                lines.append(f'  "{r["parent"][:12]}" -> "{r["hash"][:12]}";')
            for ref in state_refs(r["params"]):
                lines.append(f'  "{ref[:12]}" -> "{r["hash"][:12]}" [style=dashed];')
        lines.append("}")
        return "\n".join(lines)


def _reader(path: Path, maintenance: bool = False) -> Store:
    """The store opened for reading: no state, lock or tensor is written, but where the directory
    and its index are writable the index's listing cache is kept current."""
    store = Store(path, create=False, read_only=True, maintenance=maintenance)
    index = path / "index.sqlite"
    store.cache_writable = store.index_usable and os.access(path, os.W_OK) and index.is_file() \
        and os.access(index, os.W_OK)
    return store


def list_states(path: str | Path, *, tag: str | None = None, recipe: str | None = None, depth: int | None = None,
                status: str | None = None, limit: int = 0) -> tuple[list[dict], int, dict]:
    """(the first ``limit`` matching listing rows in display order, how many matched, damaged
    manifests): answered by the index in SQL where it can (`prunelab ls` on 100,000 states),
    else from a full :class:`Results` listing."""
    path = Path(path)
    if not (path / "states").is_dir():
        raise StoreError(f"{path}: not a prunelab store (no states/ folder)")
    store = _reader(path)
    damaged: dict = {}
    answer = store.query_listing(tag=tag, recipe=recipe, depth=depth, status=status, limit=limit, damaged=damaged)
    if answer is not None:
        return answer[0], answer[1], damaged
    results = Results(path)
    rows = results.rows(tag=tag, recipe=recipe, depth=depth, status=status)
    return (rows if limit <= 0 else rows[:limit]), len(rows), results.damaged


def open_store(path: str | Path, *, writable: bool = False, maintenance: bool = False) -> Results:
    """A :class:`Results` view of a store; ``writable`` only for maintenance (gc, verify --repair);
    ``maintenance`` opens a store even with links where its folders belong (verify reports them)."""
    return Results(path, writable=writable, maintenance=maintenance)
