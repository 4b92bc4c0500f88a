"""Slow end-to-end checks (``pytest -m slow`` / ``tox -e slow``): the README's main job and full attacks on
the bundled ResNet-20."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from art_purifiers import ResamplingPreprocessor
from art_purifiers.cli import main
from art_purifiers.data import load_sample
from art_purifiers.evaluation import AttackSpec, evaluate
from art_purifiers.models import load_victim

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_default_evaluate_command(tmp_path):
    """``art-purifiers evaluate`` with its defaults (bundled data, victim, defence; AutoAttack 8/255)."""
    out = tmp_path / "table.json"
    assert main(["evaluate", "--quiet", "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]) == 0
    rows = {(r["defence"], r["threat"]): r for r in json.loads(out.read_text())["rows"]}
    assert rows[("none", "clean")]["sa"] >= 88.0
    assert rows[("none", "oblivious")]["ra"] <= 1.0  # an undefended ResNet-20 does not survive AutoAttack
    assert rows[("resampling", "oblivious")]["ra"] > rows[("none", "oblivious")]["ra"]


def test_adaptive_attacks_break_bilinear_resampling():
    """Full-gradient PGD through the resampling defeats it far more than the oblivious attack."""
    x, y = load_sample(64)
    defences = {"bilinear": ResamplingPreprocessor(device_type="cpu")}
    table = evaluate(load_victim(), defences, x, y, threats=("oblivious", "adaptive"),
                     attack=AttackSpec("pgd", steps=20, step_size=2 / 255))
    rows = {(r.defence, r.threat): r for r in table.rows}
    assert rows[("bilinear", "adaptive")].ra < rows[("bilinear", "oblivious")].ra
    assert np.isfinite(rows[("bilinear", "adaptive")].ra)


def test_eot_on_random_resampling():
    x, y = load_sample(32)
    defences = {"variant": ResamplingPreprocessor(sampler="variant", device_type="cpu")}
    table = evaluate(load_victim(), defences, x, y, threats=("eot",), attack=AttackSpec("pgd", steps=10),
                     eot_draws=4)
    assert table.rows[0].ra is not None and table.rows[0].ra < table.rows[0].sa - 10  # EOT-PGD breaks it


@pytest.mark.parametrize("name", ["resampling", "irad", "dip", "idfr"])
def test_example_runs(name, capsys, monkeypatch):
    """The example scripts run to the end (with their default arguments) and print their accuracies."""
    monkeypatch.setattr(sys, "argv", [f"{name}.py"])
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    assert "PGD-20 Linf 8/255" in capsys.readouterr().out
