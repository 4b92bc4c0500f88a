"""One word per idea (issue #24, item 6): trainer settings say ``iterations`` and ``step_size``, the old spellings
still set the new settings (with a warning), and the glossary lists every renaming."""

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
