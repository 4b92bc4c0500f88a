"""One word per idea (issue #24, item 6): trainer settings say ``iterations`` and ``step_size``, ``evaluate`` and
experiment files ``iterations``, every trainer's CPU preset is ``cpu``; the old spellings still work (with a warning
on the command line), and the glossary lists every renaming."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from art_purifiers.training import TRAINERS, apply_overrides
from art_purifiers.training.registry import RENAMED_SETTINGS, configurable_fields

GLOSSARY = Path(__file__).resolve().parents[1] / "docs" / "glossary.md"


def _all_settings() -> set[str]:
    return {name for trainer in TRAINERS.values() for config in trainer.presets.values()
            for name in configurable_fields(config)}


def test_trainer_settings_use_one_word_per_idea():
    settings = _all_settings()
    assert not {name for name in settings if name.endswith(("_steps", "_step"))}, "say _iterations, _step_size"
    assert set(RENAMED_SETTINGS.values()) <= settings and not set(RENAMED_SETTINGS) & settings


@pytest.mark.parametrize(("method", "old", "new"), [("irad", "pgd_steps", "pgd_iterations"),
                                                    ("irad", "pgd_step", "pgd_step_size"),
                                                    ("idfr", "attack_step", "attack_step_size")])
def test_old_setting_names_still_work_with_a_warning(method, old, new, caplog):
    preset = next(iter(TRAINERS[method].presets.values()))
    value = 3 if isinstance(getattr(preset, new), int) else 0.01
    with caplog.at_level(logging.WARNING, logger="art_purifiers.training.registry"):
        config = apply_overrides(preset, [f"{old}={value}"])
    assert getattr(config, new) == value and config == dataclasses.replace(preset, **{new: value})
    assert f"--set {old} is deprecated; it sets {new}" in caplog.text


def test_an_unknown_setting_is_still_refused():
    preset = next(iter(TRAINERS["dir"].presets.values()))
    with pytest.raises(ValueError, match="Unknown setting 'pgd_steps'"):
        apply_overrides(preset, ["pgd_steps=3"])  # no pgd_iterations in DIR: the old name is no alias there


def test_the_glossary_lists_every_renaming():
    text = GLOSSARY.read_text(encoding="utf-8")
    assert "## Spellings" in text
    for old, new in RENAMED_SETTINGS.items():
        assert f"`--set {old}=" in text and f"`{new}`" in text, old


def test_every_trainer_starts_from_its_cpu_preset():
    assert {trainer.default_preset for trainer in TRAINERS.values()} == {"cpu"}


def test_the_former_irad_preset_name_still_works_with_a_warning(caplog, capsys):
    from art_purifiers.cli import main

    irad = TRAINERS["irad"]
    with caplog.at_level(logging.WARNING, logger="art_purifiers.training.registry"):
        assert irad.preset_name("small") == "cpu" and irad.preset_name("paper") == "paper"
    assert "--preset small is deprecated; it is cpu now" in caplog.text
    with pytest.raises(ValueError, match="irad has no preset 'tiny'; presets: \\['cpu', 'paper', 'smoke'\\]"):
        irad.preset_name("tiny")
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit):  # the command line takes it, then the device
        main(["train", "irad", "--preset", "small", "--device", "tpu"])
    assert "--preset small is deprecated" in caplog.text and "--device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "dir", "--preset", "small"])  # no former name there
    assert "invalid choice: 'small'" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--iterations", "--steps"])
def test_evaluate_iterations_and_its_former_spelling(option, monkeypatch, caplog):
    from art_purifiers import cli

    seen = {}

    def run_evaluate(args):
        seen["iterations"] = args.iterations
        return 0

    monkeypatch.setattr(cli, "run_evaluate", run_evaluate)
    with caplog.at_level(logging.WARNING):
        assert cli.main(["evaluate", option, "7"]) == 0
    assert seen == {"iterations": 7}
    assert ("--steps is deprecated; it is --iterations now" in caplog.text) == (option == "--steps")


def test_evaluate_checks_iterations_under_either_spelling(capsys):
    from art_purifiers.cli import main

    for option in ("--iterations", "--steps"):
        with pytest.raises(SystemExit):
            main(["evaluate", "--attack", "pgd", option, "0"])
        assert "--iterations must be an integer in [1, inf), got 0" in capsys.readouterr().err


def test_experiment_files_say_iterations_and_still_read_steps():
    from art_purifiers.evaluation.experiments import parse_experiment, shard_jobs

    current = parse_experiment("[evaluation]\nattacks = ['pgd']\niterations = 7\n", "x")
    former = parse_experiment("[evaluation]\nattacks = ['pgd']\nsteps = 7\n", "x")
    assert current == former and current.evaluation.iterations == 7
    assert current.evaluation.attack_specs()[0].steps == 7
    # The declaration keeps the name the shard keys were computed with: recorded shards stay finished.
    assert current.declaration()["evaluation"]["steps"] == 7 and "iterations" not in current.declaration()["evaluation"]
    assert shard_jobs(current, "out")[0].key == shard_jobs(former, "out")[0].key
    experiments = Path(__file__).resolve().parents[1] / "experiments"
    assert not [p.name for p in experiments.glob("*.toml") if "\nsteps = " in p.read_text(encoding="utf-8")]
