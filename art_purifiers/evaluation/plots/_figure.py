"""What every plotting function shares: the optional matplotlib import, a new figure, saving it.

Rule of every ``plot_*`` function: with ``path`` the figure is written there (format from the suffix) and
closed, and the path is returned; without ``path`` the figure is returned open, registered with pyplot, so
that a notebook or the Sphinx gallery shows it.
"""

from __future__ import annotations

from pathlib import Path

#: File suffixes a figure can be written to.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def require_matplotlib():
    """The ``matplotlib`` module, or an ``ImportError`` that says how to install it."""
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Plotting needs matplotlib: pip install 'art-purifiers[plots]'.") from error
    return matplotlib


def check_figure_path(path: str | Path) -> Path:
    """``path`` as a ``Path`` if its suffix is one of :data:`FIGURE_SUFFIXES` (``ValueError`` otherwise)."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"A figure file must end in one of {FIGURE_SUFFIXES}, got {str(path)!r}.")
    return path


def new_figure(path: str | Path | None, width: float, height: float):
    """A figure of ``width x height`` inches: a bare ``Figure`` when it is only written to ``path`` (no GUI
    backend involved, nothing left open), a pyplot figure otherwise (so notebooks and the gallery show it)."""
    require_matplotlib()
    if path is not None:
        from matplotlib.figure import Figure

        return Figure(figsize=(width, height), layout="constrained")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width, height), layout="constrained")


def finish(figure, path: str | Path | None, dpi: int = 100):
    """Write ``figure`` to ``path`` and return the path, or return the figure itself when ``path`` is None."""
    if path is None:
        return figure
    path = check_figure_path(path)
    figure.savefig(path, dpi=dpi)
    return path
