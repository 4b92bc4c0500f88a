"""Accuracy against eps, one line per (defence, threat model, attack). Needs the ``plots`` extra (matplotlib)."""

from __future__ import annotations

import re
from pathlib import Path

from art_purifiers.evaluation.report import ResultTable

_EPS_LABEL = re.compile(r" ?eps=\S+")


def plot_accuracy_vs_eps(table: ResultTable, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG/PDF/SVG (by suffix) of RA against eps for every non-clean row series of ``table``.

    Rows are grouped by defence, threat model and attack with the eps removed from the attack's label; clean
    accuracy is drawn at eps = 0. Returns the path written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Plotting needs matplotlib: pip install 'art-purifiers[plots]'.") from error
    series: dict[str, list[tuple[float, float]]] = {}
    norms: set[str] = set()
    for row in table.rows:
        if row.ra is None or "eps" not in row.attack_params:
            continue
        attack = _EPS_LABEL.sub("", row.attack)
        name = f"{row.defence} | {row.threat} | {attack}"
        linf = row.attack_params.get("norm", "inf") == "inf"
        eps = float(row.attack_params["eps"]) * (255 if linf else 1)
        series.setdefault(name, [(0.0, row.sa)]).append((eps, row.ra))
        norms.add("Linf eps (x 1/255)" if linf else "L2 eps")
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, points in sorted(series.items()):
        xs, ys = zip(*sorted(set(points)), strict=True)
        axis.plot(xs, ys, marker="o", label=name)
    axis.set_xlabel(" / ".join(sorted(norms)) or "eps")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.set_title(title or f"victim {table.meta.get('victim', '?')}, n = {table.meta.get('n', '?')}")
    if series:
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
