"""Reading a finished store without the code that defined it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..headline import short_headline
from .store import Store, StoreError

if TYPE_CHECKING:  # torch is imported only by what loads tensors: listing a store stays fast
    from torch import nn

    from .snapshot import Snapshot


def flatten(data: Any, prefix: str = "", out: dict | None = None) -> dict:
    """Nested dicts → dotted keys; scalars only (lists and tables are left out)."""
    out = {} if out is None else out
    if isinstance(data, dict):
        for key, value in data.items():
            flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(data, (int, float, str, bool)) or data is None:
        out[prefix] = data
    return out


class Results:
    """A read-only view of a store: states, lineage, tables, models."""

    def __init__(self, path: str | Path, *, writable: bool = False):
        path = Path(path)
        if not (path / "states").is_dir():
            raise StoreError(f"{path}: not a prunelab store (no states/ folder)")
        # reading writes nothing (no index, no locks): a read-only or another user's store works
        self.store = Store(path, create=False, read_only=None if writable else True)
        # a damaged manifest is left out (and listed) rather than making the whole store unreadable
        self.damaged: dict[Path, str] = {}
        self._manifests = {m["hash"]: m for m in self.store.manifests(damaged=self.damaged)}

    def __len__(self) -> int:
        return len(self._manifests)

    def get(self, prefix: str) -> dict:
        """The manifest whose hash starts with ``prefix`` (must be unique)."""
        if prefix in self._manifests:  # a full hash: one dict lookup (reports call this per state)
            return self._manifests[prefix]
        hits = [m for h, m in self._manifests.items() if h.startswith(prefix)]
        if not hits:
            raise StoreError(f"{self.store.root}: no state {prefix!r}")
        if len(hits) > 1:
            raise StoreError(f"{self.store.root}: {len(hits)} states start with {prefix!r}; give more characters")
        return hits[0]

    def states(self, *, tag: str | None = None, recipe: str | None = None, depth: int | None = None,
               status: str | None = None, where: dict | None = None) -> list[dict]:
        """Manifests matching every given filter (``where``: dotted param → value)."""
        out = []
        for m in self._manifests.values():
            if tag is not None and tag not in m.get("tags", []):
                continue
            if recipe is not None and m["recipe"]["type"] != recipe:
                continue
            if depth is not None and m.get("depth") != depth:
                continue
            if status is not None and m.get("status") != status:
                continue
            if where:
                params = flatten(m["recipe"]["params"])
                if any(params.get(k) != v for k, v in where.items()):
                    continue
            out.append(m)
        return sorted(out, key=lambda m: (m.get("depth", 0), (m.get("timings") or {}).get("finished") or 0))

    def children(self, state_hash: str) -> list[dict]:
        return [m for m in self.states() if m.get("parent") == state_hash]

    def lineage(self, state_hash: str) -> list[dict]:
        """Manifests from the root to the state, with the recipe of each step."""
        chain, node = [], self.get(state_hash)
        while node is not None:
            chain.append(node)
            parent = node.get("parent")
            node = self._manifests.get(parent) if parent else None
            if parent and node is None:
                raise StoreError(f"state {chain[-1]['hash'][:12]}: parent {parent[:12]} is not in the store")
        return chain[::-1]

    def root_of(self, state_hash: str) -> dict:
        return self.lineage(state_hash)[0]

    def snapshot(self, state_hash: str) -> Snapshot:
        return self.store.load(self.get(state_hash)["hash"])

    def load_model(self, state_hash: str) -> nn.Module:
        """The state's model as a torch module, masks attached with torch's pruning."""
        return self.snapshot(state_hash).model()

    def probes(self, state_hash: str) -> list[dict]:
        return self.store.probes(self.get(state_hash)["hash"])

    def to_frame(self):
        """One row per state: identity, lineage root, params and scalar metrics flattened."""
        import pandas as pd

        rows = []
        for m in self.states():
            root = self.root_of(m["hash"])
            rp = root["recipe"]["params"]
            row = {
                "hash": m["hash"], "parent": m.get("parent"), "depth": m.get("depth", 0),
                "recipe": m["recipe"]["type"], "label": m["recipe"].get("label", m["recipe"]["type"]),
                "status": m.get("status"), "tags": ",".join(m.get("tags", [])),
                "dataset": m.get("dataset", rp.get("dataset")), "model": rp.get("model"), "seed": rp.get("seed"),
                "iteration": m.get("iteration"), "seconds": (m.get("timings") or {}).get("seconds"),
                "kept": sum(e["kept"] for e in (m.get("masks") or {}).values()) if m.get("masks") else None,
            }
            row.update({f"param.{k}": v for k, v in flatten(m["recipe"]["params"]).items()})
            row.update({f"metric.{k}": v for k, v in flatten(m.get("metrics") or {}).items()
                        if not k.startswith(("curve", "layers"))})
            for probe in self.store.probes(m["hash"]):
                label = probe.get("label", "probe").replace(" ", "_")
                row.update({f"probe.{label}.{k}": v for k, v in flatten(probe.get("result") or {}).items()})
            rows.append(row)
        return pd.DataFrame(rows)

    # ---------------------------------------------------------------- rendering

    def _label(self, m: dict) -> str:
        text = f"{m['recipe'].get('label', m['recipe']['type'])} [dim]{m['hash'][:10]}[/]"
        metrics = m.get("metrics") or {}
        bits = []
        if isinstance(metrics.get("test"), dict):
            bits.append(f"test {short_headline(metrics['test'])}")
        if "sparsity" in metrics:
            bits.append(f"sparsity {metrics['sparsity']:.3f}")
        if m.get("tags"):
            bits.append("tags " + ",".join(m["tags"]))
        if m.get("status") != "done":
            bits.append(f"[red]{m.get('status')}: {(m.get('error') or {}).get('message', '')}[/]")
        return text + (" — " + "; ".join(bits) if bits else "")

    def tree(self, collapse: bool = True):
        """A rich Tree of the whole store (one per root).

        ``collapse`` (default): a chain is drawn at one level — each state's deepest child
        (the one whose subtree goes furthest: the next round of an IMP branch) follows it on
        the next line at the same indentation, and only the side branches (controls) nest —
        so a 20-round study is 20 lines deep, not 60 levels. ``collapse=False`` nests every
        child under its parent.
        """
        from rich.tree import Tree

        top = Tree(f"[bold]{self.store.root}[/] ({len(self)} states)")
        children: dict[str, list[dict]] = {}
        for m in self.states():  # one pass, already in display order
            children.setdefault(m.get("parent"), []).append(m)
        height: dict[str, int] = {}
        for m in sorted(self.states(), key=lambda m: -m.get("depth", 0)):  # leaves first
            height[m["hash"]] = 1 + max((height.get(c["hash"], 0) for c in children.get(m["hash"], [])), default=0)

        def add(node, m):
            line = node.add(self._label(m))
            for child in children.get(m["hash"], []):
                add(line, child)

        def chain(node, first):
            """``first`` heads a chain: its continuation (each state's deepest child) is listed under
            it at one level; a side branch heads its own chain under the line it branches from."""
            head = line = node.add(self._label(first))
            m = first
            while True:
                kids = children.get(m["hash"], [])
                follow = max(kids, key=lambda c: height[c["hash"]], default=None)
                for child in kids:
                    if child is not follow:
                        chain(line, child)
                if follow is None:
                    return
                line, m = head.add(self._label(follow)), follow

        for root in self.states(depth=0):
            (chain if collapse else add)(top, root)
        return top

    def dot(self) -> str:
        """Graphviz DOT: solid edges parent → child, dashed edges for references."""
        lines = ["digraph prunelab {", '  node [shape=box, fontname="Helvetica", fontsize=10];']
        for m in self.states():
            label = m["recipe"].get("label", m["recipe"]["type"]).replace('"', "'")
            test = (m.get("metrics") or {}).get("test")
            if isinstance(test, dict):
                label += f"\\n{short_headline(test, 3)}"
            color = "" if m.get("status") == "done" else ", color=red"
            lines.append(f'  "{m["hash"][:12]}" [label="{label}\\n{m["hash"][:8]}"{color}];')
            if m.get("parent"):
                lines.append(f'  "{m["parent"][:12]}" -> "{m["hash"][:12]}";')
            for value in m["recipe"]["params"].values():
                for item in (value if isinstance(value, list) else [value]):
                    if isinstance(item, dict) and "$state" in item:
                        lines.append(f'  "{item["$state"][:12]}" -> "{m["hash"][:12]}" [style=dashed];')
        lines.append("}")
        return "\n".join(lines)


def open_store(path: str | Path, *, writable: bool = False) -> Results:
    """A :class:`Results` view of a store; ``writable`` only for maintenance (gc, verify --repair)."""
    return Results(path, writable=writable)
