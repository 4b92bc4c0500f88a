"""Figures of result tables (:class:`~art_purifiers.evaluation.report.ResultTable`, the harness's JSON):
accuracy against eps, and SA and RA per threat model for every defence."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from art_purifiers.evaluation.plots._figure import finish, new_figure
from art_purifiers.evaluation.report import ResultRow, ResultTable

_EPS_LABEL = re.compile(r" ?eps=\S+")
_MARKERS = {"oblivious": "o", "bpda": "s", "adaptive": "^", "eot": "D", "decision": "v"}
#: Order of the threat models in the summary figure (others follow in their order of appearance).
THREAT_ORDER = ("oblivious", "bpda", "adaptive", "eot", "decision")


def combine_tables(tables: Sequence[ResultTable]) -> ResultTable:
    """The rows of several tables of *different* evaluations in one table (for figures; shards of one
    evaluation are merged with :meth:`ResultTable.merge`, which adds their counts).

    A row whose ``(defence, threat, attack)`` already came from an earlier table is dropped: the first table
    that holds it wins, so list the tables in order of precedence. ``meta`` is the first table's.
    """
    if not tables:
        raise ValueError("No result table given.")
    combined = ResultTable(meta=dict(tables[0].meta))
    seen: set[tuple[str, str, str]] = set()
    for table in tables:
        for row in table.rows:
            if row.key not in seen:
                seen.add(row.key)
                combined.add(row)
    return combined


def read_result_tables(paths: Iterable[str | Path]) -> ResultTable:
    """The result tables (JSON of ``evaluate --json`` or ``merge --json``) at ``paths``, combined by
    :func:`combine_tables`; ``ValueError`` naming the first file that is missing or is not one."""
    tables = []
    for path in map(Path, paths):
        table = ResultTable.read(path)
        if not table.rows:
            raise ValueError(f"{path} holds no result rows.")
        tables.append(table)
    return combine_tables(tables)


def _selected(table: ResultTable, defences: Iterable[str] | None) -> list[ResultRow]:
    """The rows of ``defences`` (all rows when None); ``ValueError`` for a defence the table lacks."""
    if defences is None:
        return list(table.rows)
    wanted = list(defences)
    missing = sorted(set(wanted) - {row.defence for row in table.rows})
    if missing:
        raise ValueError(f"No rows for defence(s) {missing}; the table holds {_names(table)}.")
    return [row for row in table.rows if row.defence in wanted]


def _names(table: ResultTable) -> list[str]:
    return list(dict.fromkeys(row.defence for row in table.rows))


def _eps_of(row: ResultRow) -> tuple[float, bool] | None:
    """``(eps in 1/255 for L-inf or as is for L2, is L-inf)`` of an attacked row; None for clean rows."""
    if row.ra is None or "eps" not in row.attack_params:
        return None
    linf = row.attack_params.get("norm", "inf") == "inf"
    return float(row.attack_params["eps"]) * (255 if linf else 1), linf


def plot_accuracy_vs_eps(table: ResultTable, path: str | Path | None = None, title: str | None = None,
                         defences: Iterable[str] | None = None):
    """RA against eps for every series of attacked rows of ``table``, SA drawn at eps = 0.

    A series is one (defence, threat model, attack with its eps removed). A series measured at one eps only
    is drawn dotted (the line joins SA to that single RA; nothing between was measured).

    :param table: Rows of one or more evaluations (:func:`combine_tables`).
    :param path: Where to write the figure (``.png``, ``.pdf`` or ``.svg``); None returns the open figure.
    :param defences: Only these defences' rows (default: all).
    :return: ``path`` as a ``Path`` when given, else the matplotlib ``Figure``.
    """
    series: dict[str, list[tuple[float, float]]] = {}
    norms: set[str] = set()
    for row in _selected(table, defences):
        eps = _eps_of(row)
        if eps is None:
            continue
        name = f"{row.defence} | {row.threat} | {_EPS_LABEL.sub('', row.attack)}"
        series.setdefault(name, [(0.0, row.sa)]).append((eps[0], row.ra))
        norms.add("Linf eps (x 1/255)" if eps[1] else "L2 eps")
    figure = new_figure(path, 7, 4.5)
    axis = figure.add_subplot()
    for k, (name, points) in enumerate(sorted(series.items())):
        xs, ys = zip(*sorted(set(points)), strict=True)
        # One marker per threat model, shrinking along the series, so that equal points stay visible.
        marker = _MARKERS.get(name.split(" | ")[1], "o")
        axis.plot(xs, ys, marker=marker, markersize=max(9 - 1.2 * k, 3), label=name,
                  linestyle=":" if len(xs) <= 2 else "-")
    axis.set_xlabel(" / ".join(sorted(norms)) or "eps")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(-3, 103)  # room for markers at 0 and 100
    axis.grid(alpha=0.3)
    axis.set_title(title or f"victim {table.meta.get('victim', '?')}, n = {table.meta.get('n', '?')}")
    if series:
        axis.legend(fontsize=7)
    return finish(figure, path, dpi=120)


def summary_bars(table: ResultTable, eps: float | None = None,
                 defences: Iterable[str] | None = None) -> dict[str, dict[str, tuple[float, int]]]:
    """``{defence: {"SA" or threat: (accuracy %, n)}}``: the numbers of :func:`plot_results_summary`.

    For each defence and threat model, RA is the lowest over that threat model's attacks at ``eps`` (L-inf,
    in units of 1/255; default: the largest L-inf eps of the table): the worst case is the robust accuracy.
    """
    rows = _selected(table, defences)
    budgets = [e[0] for e in map(_eps_of, rows) if e is not None and e[1]]
    if eps is None:
        eps = max(budgets, default=0.0)
    bars: dict[str, dict[str, tuple[float, int]]] = {}
    for row in rows:
        found = _eps_of(row)
        entry = bars.setdefault(row.defence, {})
        entry.setdefault("SA", (row.sa, row.n))
        if found is None or not found[1] or abs(found[0] - eps) > 1e-6:
            continue
        if row.threat not in entry or row.ra < entry[row.threat][0]:
            entry[row.threat] = (row.ra, row.n)
    return bars


def _bar_series(bars: dict[str, dict[str, tuple[float, int]]]) -> list[str]:
    """``"SA"``, then the threat models present, in :data:`THREAT_ORDER` and then order of appearance."""
    present = list(dict.fromkeys(key for entry in bars.values() for key in entry if key != "SA"))
    return ["SA", *[t for t in THREAT_ORDER if t in present], *[t for t in present if t not in THREAT_ORDER]]


def _defence_label(name: str, entry: dict[str, tuple[float, int]], labels: dict[str, str] | None) -> str:
    """The defence's display name (long specs wrapped at commas) and its numbers of images."""
    counts = {key: n for key, (_, n) in entry.items()}
    if len(set(counts.values())) == 1:
        images = f"n = {next(iter(counts.values()))}"
    else:
        images = ", ".join(f"{key} n = {n}" for key, n in counts.items())
    text = (labels or {}).get(name, name)
    lines, line = [], ""
    for part in text.replace(",", ", ").split(" "):
        if line and len(line) + len(part) > 34:
            lines.append(line)
            line = ""
        line = f"{line} {part}".strip()
    return "\n".join([*lines, line, f"({images})"])


def plot_results_summary(table: ResultTable, path: str | Path | None = None, eps: float | None = None,
                         title: str | None = None, defences: Iterable[str] | None = None,
                         labels: dict[str, str] | None = None):
    """One grouped bar chart: for every defence, SA and the RA of each threat model (worst attack at ``eps``).

    Each defence's group holds the bars it has (a threat model it was not evaluated under has no bar; a bar
    of length 0 is labelled 0.0). The number of images behind the bars is printed under the defence's name.

    :param table: Rows of one or more evaluations (:func:`combine_tables`).
    :param path: Where to write the figure (``.png``, ``.pdf`` or ``.svg``); None returns the open figure.
    :param eps: L-inf budget in units of 1/255 (default: the largest in the table); see :func:`summary_bars`.
    :param title: Title (default: the budget and the victim).
    :param defences: Only these defences, in this order (default: all, in order of appearance).
    :param labels: Display names of defences (default: their specs).
    :return: ``path`` as a ``Path`` when given, else the matplotlib ``Figure``.
    """
    bars = summary_bars(table, eps, defences)
    if defences is not None:
        bars = {name: bars[name] for name in defences}
    series = _bar_series(bars)
    colours = {key: f"C{k}" for k, key in enumerate(series)}
    figure = new_figure(path, 9, 1.2 + 0.19 * sum(len(entry) + 1 for entry in bars.values()))
    axis = figure.add_subplot()
    # Horizontal bars, first defence at the top: the bars of a group are stacked downwards, a gap between groups.
    position, ticks = 0.0, []
    for entry in bars.values():
        keys = [key for key in series if key in entry]
        places = [position - k for k in range(len(keys))]
        drawn = axis.barh(places, [entry[key][0] for key in keys], height=0.85, color=[colours[k] for k in keys])
        # The threat model is written beside each RA so that a bar of length 0 still says what it is.
        texts = [f"{entry[key][0]:.1f}" + ("" if key == "SA" else f" {key}") for key in keys]
        axis.bar_label(drawn, labels=texts, fontsize=6, padding=2)
        ticks.append(position - (len(keys) - 1) / 2)
        position -= len(keys) + 1
    axis.set_yticks(ticks, [_defence_label(name, entry, labels) for name, entry in bars.items()], fontsize=7)
    axis.set_xlim(0, 105)
    axis.set_ylim(position + 0.5, 1)
    axis.set_xlabel("accuracy (%)")
    axis.grid(axis="x", alpha=0.3)
    handles = [_patch(colours[key]) for key in series]
    axis.legend(handles, [key if key == "SA" else f"RA {key}" for key in series], fontsize=7, loc="lower right")
    axis.set_title(title or f"SA and RA per threat model ({summary_eps_label(table, eps, defences)}), "
                   f"victim {table.meta.get('victim', '?')}", fontsize=9)
    return finish(figure, path, dpi=120)


def _patch(colour: str):
    from matplotlib.patches import Patch

    return Patch(color=colour)


def summary_eps_label(table: ResultTable, eps: float | None, defences: Iterable[str] | None = None) -> str:
    """``"Linf 8/255"``: the budget the summary shows."""
    if eps is None:
        budgets = [e[0] for e in map(_eps_of, _selected(table, defences)) if e is not None and e[1]]
        eps = max(budgets, default=0.0)
    return f"Linf {eps:g}/255"
