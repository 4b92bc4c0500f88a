"""Figures of defences and results. Needs the ``plots`` extra (matplotlib), imported only when a figure is made.

Every ``plot_*`` function writes its figure to ``path`` (``.png``, ``.pdf`` or ``.svg``) and returns the path,
or, without ``path``, returns the open matplotlib figure (as a notebook or the Sphinx gallery wants it).

- :func:`plot_purification`: clean, adversarial, purified images and the perturbation before and after.
- :func:`plot_shift_fields` (with :func:`irad_shift_fields`): IRAD's SampleNet shifts beside the naive samplers.
- :func:`plot_dip_trace` (with :func:`dip_traces`): the DIP defence's trace of an image.
- :func:`plot_accuracy_vs_eps` and :func:`plot_results_summary`: result tables (the harness's JSON).
"""

from art_purifiers.evaluation.plots._figure import FIGURE_SUFFIXES, check_figure_path
from art_purifiers.evaluation.plots.dip import DIPTrace, dip_traces, plot_dip_trace
from art_purifiers.evaluation.plots.panels import plot_purification, purify, victim_predictions
from art_purifiers.evaluation.plots.results import (
    THREAT_ORDER,
    combine_tables,
    plot_accuracy_vs_eps,
    plot_results_summary,
    read_result_tables,
    summary_bars,
)
from art_purifiers.evaluation.plots.shifts import irad_shift_fields, plot_shift_fields

__all__ = [
    "FIGURE_SUFFIXES",
    "THREAT_ORDER",
    "DIPTrace",
    "check_figure_path",
    "combine_tables",
    "dip_traces",
    "irad_shift_fields",
    "plot_accuracy_vs_eps",
    "plot_dip_trace",
    "plot_purification",
    "plot_results_summary",
    "plot_shift_fields",
    "purify",
    "read_result_tables",
    "summary_bars",
    "victim_predictions",
]
