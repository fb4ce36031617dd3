"""The pieces every prunelab HTML page is built from: the page's style and load check, numbers and
tables formatted for people, sections holding a figure or a table.

Shared by the study report (html.py), its population sections and a plug-in's report kind (the shower
GAN's page); public: STYLE, CHECK, section, table_section, display.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import plots

# The page's CSS
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1040px;margin:2em auto;
color:#222;padding:0 1em;line-height:1.45}h1{margin-bottom:0;font-size:1.7em}h2{font-size:1.3em;margin-bottom:.4em}
.sub{color:#666;margin-top:.3em;font-size:14px}section{margin:2.2em 0}
img{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;font-size:13px;margin-top:.6em;font-variant-numeric:tabular-nums}
td,th{border-bottom:1px solid #e3e3e3;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f3f4f6;border-bottom:1px solid #ccc;font-weight:600}td.t,th.t{text-align:left}td.n{white-space:nowrap}
tbody tr:nth-child(even){background:#fafafa}
pre{background:#fafafa;border:1px solid #eee;padding:.6em;font-size:11px;overflow-x:auto;max-height:420px}
details summary{cursor:pointer;color:#357}.note{color:#444;font-size:14px;max-width:62em}
.summary{background:#f6f8fb;border:1px solid #d9e1ec;border-radius:6px;padding:.4em 1.2em .8em}
.summary h2{margin-top:.6em}.summary li{margin:.35em 0}.summary ul{padding-left:1.2em}
.verdict{display:inline-block;border-radius:3px;padding:0 .45em;font-size:12px;font-weight:600;color:#fff}
.v-supported{background:#1a7f37}.v-not{background:#b35900}.v-untestable{background:#777}
.caveat{border-left:4px solid #d29922;padding:.2em .8em;background:#fff8e6}
nav{font-size:13px;color:#555}nav a{color:#357;margin-right:.9em;white-space:nowrap}
"""

# Sets the page title to "report: N/M images loaded" once every image has decoded,
# so a headless browser can check the report really renders.
CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = `report: ${ok}/${imgs.length} images loaded`;
  // images the browser had to shrink to fit the column (their text is then below its drawn size)
  document.body.dataset.scaled = imgs.filter(i => i.naturalWidth > 0 && i.width < i.naturalWidth - 1).length;
});
</script>"""


DPI = 110  # the figures' resolution: plots.WIDTH inches are shown at 100 % zoom

_LISTS = ("recall", "precision", "f1", "class_names")  # per-class lists: in the per-class table instead
_INTERNAL = _LISTS + ("hash", "parent", "state")  # never shown in a table (the CSV keeps what it had)


# ---------------------------------------------------------------- numbers and tables for people


class _Raw(str):
    """Table cell text that is already HTML (e.g. bold)."""


def _missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _decimals(*values, small: int | None = None) -> int | None:
    """Decimals for numbers of this size read together: 3 below 10, 2 below 100, 1 below 1,000, else 0;
    below 0.01 ``small`` decimals (None: two significant digits)."""
    finite = [abs(float(v)) for v in values if not _missing(v) and math.isfinite(float(v))]
    top = max(finite, default=0.0)
    if 0 < top < 0.01:
        return small
    return 3 if top < 10 else 2 if top < 100 else 1 if top < 1000 else 0


def _num(value, signed: bool = False, decimals: int | None | str = "auto") -> str:
    """A number for reading: 3 decimals in the usual range, fewer for large values, a true minus sign."""
    if _missing(value):
        return "–"
    v = float(value)
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if decimals == "auto":
        decimals = _decimals(v)
    if v == 0:
        text = "0" if decimals is None else f"{0:.{decimals}f}"
    elif decimals is None:
        text = f"{v:.2g}"
    else:
        text = f"{v:,.{decimals}f}"
    if signed and v > 0:
        text = "+" + text
    return text.replace("-", "−")


def _p(value) -> str:
    """A p-value: two significant digits, '< 0.0001' below that."""
    if _missing(value):
        return "–"
    v = float(value)
    if v < 1e-4:
        return "< 0.0001"
    return f"{v:.2g}" if v < 1 else "1"


def _p_is(value) -> str:
    """'= 0.0012' or '< 0.0001': a p-value after 'p'."""
    text = _p(value)
    return text if text.startswith("<") else f"= {text}"


def _pct(value) -> str:
    return "–" if _missing(value) else f"{float(value):.1f} %"


def _interval(mean, low, high, signed: bool = False, decimals: int | None | str = "auto") -> str:
    """``mean [low, high]`` with one number of decimals for the three (``decimals``: given, e.g. one for a
    whole column)."""
    if _missing(mean):
        return "–"
    if _missing(low) or _missing(high):
        return _num(mean, signed, decimals)
    d = _decimals(mean, low, high, small=4) if decimals == "auto" else decimals
    return f"{_num(mean, signed, d)} [{_num(low, signed, d)}, {_num(high, signed, d)}]"


def _levels(values) -> str:
    """(13.3, 6.9, 3.7) → '13.3, 6.9, 3.7 %'; a long run as its range."""
    values = [float(v) for v in values]
    if not values:
        return "–"
    if len(values) > 4:
        return f"{values[0]:g}–{values[-1]:g} % ({len(values)} levels)"
    return ", ".join(f"{v:g}" for v in values) + " %"


_HEADERS = {"branch": "branch", "remaining": "weights remaining", "seeds": "seeds", "round": "round",
            "config": "configuration", "p_adjusted": "Holm p", "d_z": "d_z", "kind": "kind", "seed": "seed",
            "anova_p": "ANOVA p", "p_random": "p vs random masks", "remaining_seed": "weights remaining (this seed)",
            "flops_removed": "FLOPs removed", "params_removed": "parameters removed",
            "rejection_90_unbounded": "seeds with unbounded rejection", "roc_auc": "ROC AUC",
            "rejection_90": "rejection at 90 % eff.", "worst_recall": "worst-class recall",
            "gap": "max − min class recall", "recall_std": "std of class recall",
            "min_max_ratio": "min / max class recall", "delta_vs_dense": "Δ vs dense", "ci_low": "95 % CI",
            "jaccard": "Jaccard", "chance": "chance", "a": "A", "b": "B", "sign_agreement": "sign agreement",
            "distance": "relative distance", "cosine": "cosine"}
_PERCENT_WORDS = ("remaining", "removed", "sparsity")
_P_COLUMNS = ("p", "p_adjusted", "p_random", "anova_p", "p_value", "pvalue")


def _header(name) -> str:
    if isinstance(name, (float, np.floating)):  # a weights-remaining level as a column (per-class table)
        return f"{float(name):g} %"
    name = str(name)
    return _HEADERS.get(name, name.replace("test.", "").replace("_", " "))


def _format_column(name, values: pd.Series) -> list[str]:
    """Generic cells of one column: no None/nan, no tuples, units on percentages, p-values as p-values."""
    key = str(name)
    present = [v for v in values if not _missing(v) if not isinstance(v, (tuple, list))]
    numeric = [v for v in present if isinstance(v, (int, float, np.integer, np.floating))
               and not isinstance(v, (bool, np.bool_))]
    integral = bool(numeric) and all(float(v).is_integer() for v in numeric)
    column = _decimals(*numeric, small=4)  # one number of decimals for the whole column
    out = []
    for v in values:
        if isinstance(v, (tuple, list, np.ndarray)):
            items = list(v)
            out.append(", ".join(_num(x) if isinstance(x, (float, np.floating)) else str(x) for x in items) or "–")
        elif _missing(v):
            out.append("–")
        elif isinstance(v, (bool, np.bool_)):
            out.append("yes" if v else "no")
        elif isinstance(v, (int, np.integer)) or (isinstance(v, (float, np.floating)) and integral
                                                  and key not in _P_COLUMNS and len(numeric) == len(present)
                                                  and not any(w in key for w in _PERCENT_WORDS)):
            out.append(f"{int(v):,}" if abs(float(v)) >= 1e4 else str(int(v)))
        elif isinstance(v, (float, np.floating)):
            if key in _P_COLUMNS or key.startswith("p_"):
                out.append(_p(v))
            elif isinstance(name, (float, np.floating)):  # a change at one level (per-class table)
                out.append(_num(v, signed=True, decimals=3))
            elif any(w in key for w in _PERCENT_WORDS):
                out.append(_pct(v))
            else:
                out.append(_num(v, decimals=column))
        else:
            out.append(str(v))
    return out


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """Any table as text for people: internal columns dropped (hash, parent, per-class lists, a
    configuration column that is empty, a 'planned' column that is always true), ``x`` with ``x_low``
    and ``x_high`` (or ``ci_low``/``ci_high`` after the mean or difference) as one ``x [low, high]``
    column, numbers rounded, percentages with their unit."""
    frame = frame.drop(columns=[c for c in _INTERNAL if c in frame], errors="ignore")
    drop = [c for c in frame.columns if frame[c].map(_missing).all()]
    if "config" in frame and frame["config"].fillna("").nunique() <= 1:
        drop.append("config")
    if "planned" in frame and frame["planned"].astype(bool).all():
        drop.append("planned")
    frame = frame.drop(columns=drop)
    columns, out = list(frame.columns), {}
    for name in columns:
        key = str(name)
        if key.endswith(("_low", "_high")) and (key.rsplit("_", 1)[0] in frame or key.startswith("ci_")):
            continue
        low, high = f"{key}_low", f"{key}_high"
        if low not in frame and "ci_low" in frame and key in ("mean", "difference", "accuracy", "value"):
            low, high = "ci_low", "ci_high"
        if low in frame and high in frame:
            signed = key in ("difference", "delta", "bias")
            d = _decimals(*frame[name], *frame[low], *frame[high], small=4)
            out[f"{_header(name)} [95 % CI]"] = [_interval(m, lo, hi, signed, d) for m, lo, hi
                                                in zip(frame[name], frame[low], frame[high])]
        else:
            out[_header(name)] = _format_column(name, frame[name])
    return pd.DataFrame(out)


_NUMBER = re.compile(r"^(< )?[+−-]?(\d[\d,]*(\.\d+)?(e[+−-]?\d+)?|∞)( %)?( vs .+)?( \[.+\])?$")


def _html_table(shown: pd.DataFrame, max_rows: int) -> str:
    """``shown`` (text cells; a :class:`_Raw` cell is HTML) as an HTML table of its first ``max_rows`` rows;
    text columns left-aligned, numbers right-aligned."""
    head = shown.head(max_rows)
    text_columns = {c for c in head.columns
                    if not all(_NUMBER.match(re.sub(r"<[^>]+>", "", str(v))) for v in head[c] if str(v) not in ("–", ""))}
    cls = {c: ' class=t' if c in text_columns else " class=n" for c in head.columns}
    rows = "".join("<tr>" + "".join(f"<td{cls[c]}>{v if isinstance(v, _Raw) else html.escape(str(v))}</td>"
                                    for c, v in zip(head.columns, row)) + "</tr>"
                   for row in head.itertuples(index=False))
    header = "".join(f"<th{cls[c]}>{html.escape(str(c))}</th>" for c in head.columns)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"


def _csv_link(frame: pd.DataFrame, name: str) -> str:
    raw = frame.drop(columns=[c for c in _LISTS + ("hash", "parent") if c in frame], errors="ignore")
    csv = base64.b64encode(raw.to_csv(index=False).encode()).decode()
    return f'<a download="{name}.csv" href="data:text/csv;base64,{csv}">download CSV (every column, unrounded)</a>'


def _table(frame: pd.DataFrame, name: str, max_rows: int = 60, shown: pd.DataFrame | None = None) -> str:
    """The table behind a plot, folded: formatted for reading (``shown``, default :func:`display`), the raw
    CSV as a download."""
    if frame is None or frame.empty:
        return ""
    shown = display(frame) if shown is None else shown
    more = f" (first {max_rows} of {len(shown)} rows)" if len(shown) > max_rows else ""
    return (f'<details><summary>table behind the plot{more}</summary>{_html_table(shown, max_rows)}'
            f'<p class=note>{_csv_link(frame, name)}</p></details>')


def _anchor(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")[:40]


def section(title: str, fig, table: pd.DataFrame | None, name: str, note: str = "", missing: str = "",
             shown: pd.DataFrame | None = None) -> str:
    """A figure's section: the plot (embedded PNG), a note, and its table folded behind it (``missing``:
    why there is no figure, shown when ``fig`` is None)."""
    if fig is None:
        return (f"<section id={_anchor(title)}><h2>{html.escape(title)}</h2><p class=note>not available for this "
                f"store: {html.escape(missing)}</p></section>")
    data, width = _png(fig)
    return (f"<section id={_anchor(title)}><h2>{html.escape(title)}</h2>"
            f'<img alt="{html.escape(title)}" width={width} src="data:image/png;base64,{data}">'
            + (f"<p class=note>{html.escape(note)}</p>" if note else "") + _table(table, name, shown=shown)
            + "</section>")


def table_section(title: str, frame: pd.DataFrame, name: str, note: str = "", max_rows: int = 40,
                   shown: pd.DataFrame | None = None, note_html: str = "") -> str:
    """A section whose content is a table (shown open, not behind a plot)."""
    if frame is None or frame.empty:
        return ""
    shown = display(frame) if shown is None else shown
    more = f" (first {max_rows} of {len(shown)} rows shown)" if len(shown) > max_rows else ""
    return (f"<section id={_anchor(title)}><h2>{html.escape(title)}</h2>"
            + (f"<p class=note>{html.escape(note)}</p>" if note else "") + note_html
            + _html_table(shown, max_rows) + f"<p class=note>{_csv_link(frame, name)}{more}</p></section>")


def _png(fig) -> tuple[str, int]:
    """The figure as base64 PNG at :data:`DPI`, and its width in pixels (the page shows it at that width)."""
    buffer = io.BytesIO()
    with plt.rc_context(plots.RC):
        fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    plt.close(fig)
    data = buffer.getvalue()
    width = int.from_bytes(data[16:20], "big")  # the PNG's IHDR width
    return base64.b64encode(data).decode(), width
