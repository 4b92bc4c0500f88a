"""The command line documents itself (issue #25): plain-text help with defaults on every option, --version, the
defence listing derived from the classes, the --eps scale check, optional dependencies checked up front, quiet
third-party logs and a readable footer."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import re

import pytest

from art_purifiers import __version__
from art_purifiers.cli import main

RST = re.compile(r"``|:(class|func|data|meth|mod|attr):`")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser of the command line (train with its per-method options), by command."""
    import art_purifiers.cli as cli

    captured = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured["root"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            cli.main(["train"])
    finally:
        argparse.ArgumentParser.parse_args = original
    found = {}

    def walk(parser, name):
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child, subparser in action.choices.items():
                    walk(subparser, f"{name} {child}".strip())

    walk(captured["root"], "")
    return found


PARSERS = _parsers()


def test_every_command_is_covered():
    assert {"", "evaluate", "defences", "merge", "plot", "convert-victim", "train", "train irad", "train dir",
            "train idfr"} <= set(PARSERS)


@pytest.mark.parametrize("command", sorted(PARSERS), ids=lambda c: c or "root")
def test_help_is_plain_text_with_help_on_every_option(command):
    parser = PARSERS[command]
    text = parser.format_help()
    assert not RST.search(text), f"reStructuredText in the help of {command!r}: {RST.search(text).group(0)}"
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("command", ["evaluate", "merge"])
def test_help_shows_every_default(command):
    parser = PARSERS[command]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.help:
            assert "default" in formatter._get_help_string(action), action.option_strings


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"art-purifiers {__version__}"


def test_defences_lists_every_defence_parameter_and_default(capsys):
    from art_purifiers.base import PurifierPreprocessor
    from art_purifiers.defences import ART_DEFENCES, DEFENCES

    assert main(["defences"]) == 0
    text = capsys.readouterr().out
    assert not RST.search(text)
    for name, cls in DEFENCES.items():
        assert re.search(rf"^{name}  \({cls.__name__}\): ", text, re.MULTILINE), name
        for parameter, p in inspect.signature(cls.__init__).parameters.items():
            if parameter == "self" or p.kind is p.VAR_KEYWORD:
                continue
            default = "required" if p.default is p.empty else repr(p.default)
            assert f"{parameter}={default}" in text, (name, parameter)
    for parameter in ("gradient='exact'", "batch_size=256", "seed=None", "clip_values=(0.0, 1.0)"):
        assert parameter in text
    assert "device_type" not in text  # where it runs, not what it computes
    assert all(name in text for name in ART_DEFENCES)
    assert "inputs are NCHW" in text and PurifierPreprocessor


def test_defence_descriptions_come_from_the_docstrings():
    from art_purifiers.catalogue import parameter_docs, plain
    from art_purifiers.defences import IRADPreprocessor

    assert plain("``x`` and :class:`~a.b.C` and :data:`IRAD`") == "x and C and IRAD"
    assert parameter_docs(IRADPreprocessor)["magnitude"].startswith("d or gamma (pixels, >= 0)")


def _one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    return error


@pytest.mark.parametrize(("argv", "message"), [
    (["--eps", "8"], r"--eps 8: budgets are on the \[0, 1\] pixel scale.*did you mean 8/255\?"),
    (["--eps", "8/255", "4"], r"did you mean 4/255\?"),
    (["--step-size", "2"], r"--step-size 2: .*did you mean 2/255\?"),
])
def test_linf_budget_above_one_is_refused(capsys, argv, message):
    assert re.search(message, _one_line_error(capsys, ["evaluate", "--quiet", "--no-cache", *argv]))


def test_l2_budget_above_one_is_accepted():
    from art_purifiers.cli import _budget

    assert _budget("--eps", "2", "2") == 2.0 and _budget("--eps", "255/255", "inf") == 1.0


def _without_matplotlib(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))


def test_plot_without_matplotlib_fails_before_any_attack(capsys, monkeypatch, tmp_path):
    import art_purifiers.cli as cli

    _without_matplotlib(monkeypatch)
    monkeypatch.setattr(cli, "_load_images", lambda args: pytest.fail("no data should load"))
    for argv in (["evaluate", "--plot", str(tmp_path / "f.png")],
                 ["plot", str(tmp_path / "t.json"), "--output", str(tmp_path / "f.png")],
                 ["merge", str(tmp_path / "t.json"), "--plot", str(tmp_path / "f.png")]):
        error = _one_line_error(capsys, argv)
        assert "needs matplotlib, which is not installed: pip install matplotlib" in error, argv


def test_default_evaluate_prints_no_art_info_line(capsys):
    assert main(["evaluate", "--n", "4", "--attack", "fgsm", "--threat", "clean", "oblivious", "--no-cache"]) == 0
    captured = capsys.readouterr()
    assert "Success rate" not in captured.err and "[INFO]" not in captured.err and "INFO:art" not in captured.err
    footer = captured.out.split("\n\n")[0]
    assert "attacks: fgsm L-inf eps=8/255" in footer and "{" not in footer and "[" not in footer


def test_verbose_shows_art_info_lines():
    import logging

    from art_purifiers.cli import _configure_logging

    root = logging.getLogger()
    level = root.level
    try:
        _configure_logging(argparse.Namespace(command="evaluate", verbose=True, quiet=False))
        assert logging.getLogger("art").getEffectiveLevel() == logging.INFO
        root.setLevel(logging.WARNING)
        _configure_logging(argparse.Namespace(command="evaluate", verbose=False, quiet=False))
        assert logging.getLogger("art").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("art_purifiers.evaluation").getEffectiveLevel() == logging.INFO
    finally:
        root.setLevel(level)
        logging.getLogger("art_purifiers").setLevel(logging.NOTSET)


@pytest.mark.parametrize(("preset", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_command_line_lets_idle_openmp_threads_sleep(preset, expected):
    """Before torch loads, the command line sets OMP_WAIT_POLICY=PASSIVE unless the user set it; after, it leaves
    the environment alone (OpenMP has read it already)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from art_purifiers.cli import _passive_openmp_wait

    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env.update({} if preset is None else {"OMP_WAIT_POLICY": preset})
    env["PYTHONPATH"] = os.pathsep.join([str(Path(inspect.getfile(main)).parents[1]), env.get("PYTHONPATH", "")])
    code = ("import os, sys; from art_purifiers.cli import _passive_openmp_wait; _passive_openmp_wait(); "
            "print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", expected]
    before = os.environ.get("OMP_WAIT_POLICY")
    _passive_openmp_wait()  # torch is loaded in the test process
    assert os.environ.get("OMP_WAIT_POLICY") == before
