"""The evaluation harness: threat models, attacks, tables, cache and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from art_purifiers import ResamplingPreprocessor
from art_purifiers.cli import main
from art_purifiers.defences import make_defence, parse_defence_spec
from art_purifiers.evaluation import AttackSpec, ResultTable, StandardAutoAttack, art_classifier, evaluate, parse_eps

QUICK_AA = AttackSpec(name="autoattack", eps=8 / 255, steps=5, extra={"square_queries": 20, "n_target_classes": 2})


def rows_by(table: ResultTable) -> dict[tuple[str, str], object]:
    return {(r.defence, r.threat): r for r in table.rows}


def test_parse_eps():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps("0.5") == 0.5 and parse_eps(0.25) == 0.25


def test_defence_spec_parsing():
    assert parse_defence_spec("resampling:interpolation=nearest,magnitude=1.5,seed=0") == (
        "resampling", {"interpolation": "nearest", "magnitude": 1.5, "seed": 0})
    defence = make_defence("resampling:sampler=variant", device_type="cpu")
    assert isinstance(defence, ResamplingPreprocessor) and defence.sampler == "variant"
    with pytest.raises(ValueError, match="Unknown defence"):
        make_defence("jpeg")
    with pytest.raises(ValueError, match="key=value"):
        parse_defence_spec("resampling:nearest")


def test_autoattack_breaks_undefended_points_within_budget(tiny_model, images, labels):
    classifier = art_classifier(tiny_model)
    attack = StandardAutoAttack(classifier, eps=8 / 255, n_iter=5, n_target_classes=2, square_queries=20)
    x_adv = attack.generate(images, labels)
    assert np.abs(x_adv - images).max() <= 8 / 255 * (1 + 1e-4)
    broken = classifier.predict(x_adv).argmax(1) != labels
    assert broken.sum() == sum(attack.broken_by.values())


@pytest.mark.parametrize("name", ["pgd", "fgsm", "bim", "mifgsm"])
def test_gradient_attacks_respect_budget(name, tiny_model, images, labels):
    spec = AttackSpec(name=name, eps=4 / 255, steps=3)
    x_adv = spec.build(art_classifier(tiny_model)).generate(images, y=np.eye(10)[labels])
    assert np.abs(x_adv - images).max() <= 4 / 255 + 1e-6


def test_threat_models_table(tiny_model, images, labels, tmp_path):
    identity = ResamplingPreprocessor(magnitude=0.0, device_type="cpu")
    shifted = ResamplingPreprocessor(magnitude=1.5, device_type="cpu")
    table = evaluate(tiny_model, {"identity": identity, "shifted": shifted}, images, labels,
                     threats=("clean", "oblivious", "bpda", "adaptive"), attack=QUICK_AA, cache_dir=tmp_path)
    rows = rows_by(table)
    assert rows[("none", "clean")].sa == 100.0  # labels are the tiny model's own predictions
    for row in table.rows:
        if row.ra is not None:
            assert 0.0 <= row.ra <= 100.0
            if row.threat != "oblivious" or row.defence == "none":
                assert row.ra <= row.sa  # an attack on the classifier itself never helps it
    # The identity defence attacked adaptively is the bare victim attacked.
    assert rows[("identity", "adaptive")].ra == rows[("none", "oblivious")].ra
    assert rows[("identity", "clean")].sa == rows[("none", "clean")].sa
    # Cached rerun: identical table, and no attack runs.
    again = evaluate(tiny_model, {"identity": identity, "shifted": shifted}, images, labels,
                     threats=("clean", "oblivious", "bpda", "adaptive"), attack=QUICK_AA, cache_dir=tmp_path)
    assert again.to_json() == table.to_json()


def test_table_formats(tiny_model, images, labels):
    table = evaluate(tiny_model, {"r": ResamplingPreprocessor(device_type="cpu")}, images, labels,
                     threats=("clean",), attack=QUICK_AA)
    assert "| r | clean |" in table.render("markdown")
    assert json.loads(table.render("json"))["rows"][1]["defence"] == "r"
    assert table.render("csv").splitlines()[0].startswith("defence,threat,attack,sa,ra")
    assert table.render("text").splitlines()[0].split()[:3] == ["defence", "threat", "attack"]
    with pytest.raises(ValueError, match="format"):
        table.render("html")


def test_unknown_threat_is_refused(tiny_model, images, labels):
    with pytest.raises(ValueError, match="Unknown threat"):
        evaluate(tiny_model, {}, images, labels, threats=("telepathy",))


def test_cli_evaluate_on_bundled_defaults(tmp_path, capsys):
    out = tmp_path / "table.json"
    code = main(["evaluate", "--n", "8", "--attack", "pgd", "--steps", "2", "--threat", "clean", "oblivious",
                 "bpda", "--no-cache", "--quiet", "--format", "json", "--output", str(out), "--device", "cpu"])
    assert code == 0
    table = json.loads(out.read_text())
    assert {(r["defence"], r["threat"]) for r in table["rows"]} == {
        ("none", "clean"), ("resampling", "clean"), ("none", "oblivious"), ("resampling", "oblivious"),
        ("resampling", "bpda")}
    assert table["meta"]["n"] == 8
