"""Every plotting function on tiny inputs (Agg backend): the file exists and is a PNG of the expected size;
the ``plot`` subcommand writes figures from a results JSON and refuses bad input with exit code 2."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
from PIL import Image  # noqa: E402

from art_purifiers import DIPPreprocessor, ResamplingPreprocessor  # noqa: E402
from art_purifiers.cli import main  # noqa: E402
from art_purifiers.evaluation import ResultRow, ResultTable  # noqa: E402
from art_purifiers.evaluation.plots import (  # noqa: E402
    combine_tables,
    dip_traces,
    irad_shift_fields,
    plot_accuracy_vs_eps,
    plot_dip_trace,
    plot_purification,
    plot_results_summary,
    plot_shift_fields,
    summary_bars,
)
from art_purifiers.nn.samplenet import SampleNet  # noqa: E402


def assert_png(path, width: int, height: int) -> None:
    """``path`` is a readable PNG of ``width x height`` pixels (one pixel of rounding allowed)."""
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        size = image.size
    with Image.open(path) as image:
        image.verify()
    assert abs(size[0] - width) <= 1 and abs(size[1] - height) <= 1, size


def small_table() -> ResultTable:
    """Victim and one defence: clean, oblivious FGSM at 2/255 and 8/255, adaptive at 8/255 (10 images)."""
    table = ResultTable(meta={"victim": "tiny", "n": 10})
    for defence, sa in (("none", 9), ("r", 8)):
        table.add(ResultRow.from_counts(defence, "clean", "-", sa, None, 10, 0.0))
    for eps, robust in ((2, (5, 7)), (8, (0, 4))):
        params = {"eps": eps / 255, "norm": "inf"}
        for defence, sa, ra in (("none", 9, robust[0]), ("r", 8, robust[1])):
            table.add(ResultRow.from_counts(defence, "oblivious", f"fgsm Linf eps={eps}/255", sa, ra, 10, 0.1,
                                            attack_params=params))
    table.add(ResultRow.from_counts("r", "adaptive", "pgd-5 Linf eps=8/255", 8, 1, 10, 0.1,
                                    attack_params={"eps": 8 / 255, "norm": "inf"}))
    return table


def test_purification_grid(tiny_model, images, labels, tmp_path):
    x_adv = np.clip(images[:2] + 8 / 255 * np.sign(np.random.default_rng(0).normal(size=images[:2].shape)), 0, 1)
    path = plot_purification(tiny_model, ResamplingPreprocessor(), images[:2], x_adv.astype(np.float32),
                             labels[:2], class_names=[f"c{i}" for i in range(10)], path=tmp_path / "grid.png")
    assert_png(path, 870, 370)  # 6 columns of 1.45 in, 2 rows of 1.6 in + 0.5 in, 100 dpi
    with pytest.raises(ValueError, match="one shape"):
        plot_purification(tiny_model, ResamplingPreprocessor(), images[:2], images[:1])


def test_shift_fields(tmp_path):
    torch.manual_seed(0)
    fake_irad = SimpleNamespace(representation=SimpleNamespace(encode=lambda x: torch.rand(len(x), 4, 8, 8)),
                                samplenet=SampleNet(feature_dim=4, hidden=(8,)))
    image = np.random.default_rng(0).uniform(size=(3, 8, 8)).astype(np.float32)
    fields = irad_shift_fields(fake_irad, image, magnitude=1.5, seed=0)
    assert list(fields) == ["SampleNet", "invariant d=1.5", "variant gamma=1.5"]
    assert all(field.shape == (8, 8, 2) for field in fields.values())
    assert np.all(fields["invariant d=1.5"] == 1.5) and 0 <= fields["variant gamma=1.5"].min()
    assert_png(plot_shift_fields(image, fields, path=tmp_path / "shifts.png"), 920, 490)
    with pytest.raises(ValueError, match="shape"):
        plot_shift_fields(image, {"bad": np.zeros((4, 4, 2))})


def test_dip_trace(tiny_model, images, tmp_path):
    defence = DIPPreprocessor(tiny_model, iterations=12, snapshots=6, warmup=2, grid=4, keep=2, seed=0)
    traces = dip_traces(defence, {"clean": images[0], "adversarial": images[1]}, seed=0)
    trace = traces["clean"]
    assert trace.iterations.tolist() == [2, 4, 6, 8, 10, 12] and trace.psnr.shape == trace.labels.shape == (6,)
    if len(trace.crossings):  # the later snapshot of each of the last two pairs
        assert set(trace.chosen) == set(trace.crossings[-2:] + 1)
    else:  # no pair: the last two snapshots
        assert trace.chosen.tolist() == [4, 5]
    assert_png(plot_dip_trace(traces, path=tmp_path / "trace.png"), 800, 550)


def test_accuracy_vs_eps_and_summary(tmp_path):
    table = small_table()
    assert_png(plot_accuracy_vs_eps(table, tmp_path / "eps.png", defences=["r"]), 840, 540)
    bars = summary_bars(table)
    assert bars["r"] == {"SA": (80.0, 10), "oblivious": (40.0, 10), "adaptive": (10.0, 10)}
    # 9 in wide at 120 dpi; 1.2 in + 0.19 in per bar and per gap (2 + 1 for none, 3 + 1 for r).
    assert_png(plot_results_summary(table, tmp_path / "summary.png"), 1080, round(120 * (1.2 + 0.19 * 7)))
    with pytest.raises(ValueError, match="No rows for defence"):
        plot_results_summary(table, tmp_path / "x.png", defences=["missing"])
    with pytest.raises(ValueError, match="must end in"):
        plot_accuracy_vs_eps(table, tmp_path / "eps.jpg")


def test_combine_tables_keeps_the_first_row_of_a_key():
    first, second = small_table(), small_table()
    second.rows[0].sa = 0.0
    second.add(ResultRow.from_counts("other", "clean", "-", 5, None, 10, 0.0))
    combined = combine_tables([first, second])
    assert len(combined.rows) == len(first.rows) + 1 and combined.rows[0].sa == 90.0


def test_plot_without_path_returns_the_open_figure():
    import matplotlib.pyplot as plt

    figure = plot_results_summary(small_table())
    assert plt.fignum_exists(figure.number)
    plt.close(figure)


def test_cli_plot(tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text(small_table().to_json(), encoding="utf-8")
    assert main(["plot", str(results), "--output", str(tmp_path / "fig.png")]) == 0
    assert_png(tmp_path / "fig_eps.png", 840, 540)
    assert (tmp_path / "fig_summary.png").is_file()
    assert main(["plot", str(results), "--kind", "summary", "--eps", "2/255", "--output", str(tmp_path / "s.svg")]) == 0
    assert (tmp_path / "s.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(("make_args", "message"), [
    (lambda d, good: ["plot", str(d / "missing.json"), "--output", str(d / "f.png")], "no such file"),
    (lambda d, good: ["plot", str(d / "bad.json"), "--output", str(d / "f.png")], "not a results JSON"),
    (lambda d, good: ["plot", good, "--output", str(d / "f.jpg")], "must end in"),
    (lambda d, good: ["plot", good, "--output", str(d / "nowhere" / "f.png")], "does not exist"),
    (lambda d, good: ["plot", good, "--output", str(d / "f.png"), "--eps", "eight"], "--eps"),
    (lambda d, good: ["plot", good, "--output", str(d / "f.png"), "--defence", "zz"], "No rows for defence"),
])
def test_cli_plot_refuses_bad_input(tmp_path, capsys, make_args, message):
    good = tmp_path / "results.json"
    good.write_text(small_table().to_json(), encoding="utf-8")
    (tmp_path / "bad.json").write_text(json.dumps({"rows": [{"defence": "x"}]}), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(make_args(tmp_path, str(good)))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "f.png").exists()
