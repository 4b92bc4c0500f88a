"""DIP defences: batched equals one at a time, the DIPDefend stopping rule, parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from defences_under_contract import TINY_DIP, dip_victim, tiny_dip, tiny_dipdefend

from art_purifiers.defences.dip import DIPDefendPreprocessor, DIPPreprocessor, HoltTurningPoint
from art_purifiers.nn.dip import dip_snapshots, dip_trace
from art_purifiers.nn.metrics import psnr, ssim


@pytest.mark.parametrize("jitter", [0.0, 0.05], ids=["fixed-input", "jittered-input"])
@pytest.mark.parametrize("factory", [tiny_dip, tiny_dipdefend], ids=["dip", "dipdefend"])
def test_batched_equals_one_at_a_time(factory, jitter):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    defence = factory(device_type="cpu", input_jitter=jitter)
    seeds = [3, 4, 5]
    with torch.no_grad():
        together = defence.purify_with_seeds(x, seeds)
        alone = torch.cat([defence.purify_with_seeds(x[i : i + 1], [s]) for i, s in enumerate(seeds)])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("factory", [tiny_dip, tiny_dipdefend], ids=["dip", "dipdefend"])
def test_batch_size_does_not_change_an_images_result(factory, one_thread):
    # Every image gets the same seed at batch_size 1 and 4, and its trace is bitwise the same (a lone network takes
    # the batched products; Adam is not fused), so the outputs are equal, not merely close. Before the fix they
    # differed by 1e-6 here, and by up to 0.19 for DIPDefend at its defaults after 1000 iterations.
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    outputs = []
    for batch_size in (1, 4):
        defence = factory(device_type="cpu", seed=5, batch_size=batch_size)
        defence.set_params(iterations=30)
        outputs.append(defence.forward(x)[0])
    torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0)


def test_holt_turning_point_matches_the_recurrence():
    series = torch.tensor([[10.0, 20.0, 24.0, 25.0, 25.5, 25.2, 24.0, 23.0],
                           [5.0, 5.5, 9.0, 9.1, 9.0, 8.0, 7.0, 6.0]]).T
    lam = 0.3
    tracker = HoltTurningPoint(lam)
    last_best = [tracker.update(series[t]).nonzero().flatten().tolist() for t in range(len(series))]
    for image in range(2):
        y = series[:, image].tolist()
        s, b = [y[0], lam * y[1] + (1 - lam) * (y[0] + (y[1] - y[0]))], y[1] - y[0]
        for t in range(2, len(y)):
            s.append(lam * y[t] + (1 - lam) * (s[t - 1] + b))
            b = lam * (s[t] - s[t - 1]) + (1 - lam) * b
        expected = [t for t in range(len(y)) if all(s[t] > s[u] for u in range(t))]
        assert [t for t in range(len(y)) if image in last_best[t]] == expected


def test_dip_uses_the_victims_decisions_and_stays_in_range():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    out = tiny_dip(device_type="cpu", seed=0).forward(x)[0]
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert len(tiny_dip().snapshot_iterations()) == 3


def test_a_longer_trace_serves_a_shorter_setting():
    # The sensitivity study fits one trace to the longest setting and reconstructs every shorter one from it.
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    seeds = [7, 8]
    short = tiny_dip(device_type="cpu")
    long = DIPPreprocessor(short.classifier, TINY_DIP, iterations=10, snapshots=5, warmup=0, device_type="cpu")
    wanted = np.union1d(short.snapshot_iterations(), long.snapshot_iterations()).astype(int)
    snaps = long.trace(x, seeds, wanted)
    assert snaps.shape == (len(wanted), 2, 3, 16, 16)
    mine = np.isin(wanted, short.snapshot_iterations())
    with torch.no_grad():
        expected = short.purify_with_seeds(x, seeds)
        torch.testing.assert_close(short.reconstruct(x, snaps[torch.from_numpy(mine)], wanted[mine]), expected,
                                   atol=0, rtol=0)


def test_input_jitter_changes_the_trace_and_is_seeded():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16)

    def snaps(jitter: float) -> torch.Tensor:
        return dip_snapshots(x, TINY_DIP, [3], [torch.Generator().manual_seed(1)], input_jitter=jitter)

    torch.testing.assert_close(snaps(0.05), snaps(0.05), atol=0, rtol=0)
    assert float((snaps(0.05) - snaps(0.0)).abs().max()) > 1e-3


def test_dip_snapshots_are_the_trace_images():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16)
    trace = []
    dip_trace(x, TINY_DIP, 4, [torch.Generator().manual_seed(1)], on_iteration=lambda t, out, _: trace.append(out))
    snaps = dip_snapshots(x, TINY_DIP, [2, 4], [torch.Generator().manual_seed(1)])
    torch.testing.assert_close(snaps, torch.stack([trace[1], trace[3]]), atol=0, rtol=0)
    with pytest.raises(ValueError, match="increasing"):
        dip_snapshots(x, TINY_DIP, [4, 2], [torch.Generator().manual_seed(1)])


def test_dip_accepts_an_art_classifier():
    from conftest import make_classifier

    x = torch.rand(1, 3, 32, 32)
    defence = DIPPreprocessor(make_classifier(dip_victim()), TINY_DIP, iterations=4, snapshots=2, warmup=0, grid=2,
                              keep=1, seed=0, device_type="cpu")
    assert defence.forward(x)[0].shape == x.shape


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"network": "huge"}, "network"), ({"iterations": 1}, "iterations"), ({"snapshots": 5000}, "snapshots"),
     ({"keep": 0}, "keep"), ({"warmup": 5000}, "warmup"), ({"gradient": "exact"}, "not differentiable"),
     ({"input_jitter": -0.1}, "input_jitter")],
)
def test_invalid_dip_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DIPPreprocessor(dip_victim(), **kwargs)


def test_invalid_dipdefend_parameters():
    with pytest.raises(ValueError, match="smoothing"):
        DIPDefendPreprocessor(smoothing=0)


def test_metrics():
    a = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(ssim(a, a), torch.ones(2))
    assert float(psnr(a, (a + 0.1).clamp(0, 1)).min()) > 15
    assert float(ssim(a, torch.rand(2, 3, 16, 16)).max()) < 0.5


@pytest.mark.parametrize("factory", [tiny_dip, tiny_dipdefend])
def test_verbose_shows_the_fit_and_changes_nothing_else(factory, capsys):
    """``verbose`` (off by default) shows a progress bar over the DIP fit; it is validated, settable, and in neither
    the repr nor the fingerprint, and the output does not depend on it."""
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    quiet = factory(seed=0, device_type="cpu")
    assert quiet.verbose is False
    out = quiet.forward(x)[0]
    assert "DIP fit" not in capsys.readouterr().err
    loud = quiet.configured(verbose=True)
    torch.testing.assert_close(loud.forward(x)[0], out, rtol=0, atol=0)
    assert "DIP fit of 2 images" in capsys.readouterr().err
    assert repr(loud) == repr(quiet) and loud.fingerprint() == quiet.fingerprint()
    assert "verbose" not in quiet.params
    with pytest.raises(ValueError, match="verbose must be True or False"):
        factory(verbose="yes")
    with pytest.raises(ValueError, match="verbose must be True or False"):
        quiet.set_params(verbose=1)


def test_quick_presets():
    """The quick-look settings: fewer iterations, the DIP defence's warm-up and snapshots in proportion (700 and 200
    of 1500); keyword arguments override them."""
    dip = DIPPreprocessor.quick(dip_victim(), seed=0)
    assert (dip.iterations, dip.warmup, dip.snapshots) == (400, round(400 * 700 / 1500), round(400 * 200 / 1500))
    assert DIPPreprocessor.quick(dip_victim(), iterations=600, warmup=300).iterations == 600
    dipdefend = DIPDefendPreprocessor.quick(seed=1)
    assert dipdefend.iterations == 500 and dipdefend.seed == 1
    assert dipdefend.iterations < DIPDefendPreprocessor().iterations and dip.iterations < DIPPreprocessor(
        dip_victim()).iterations


def test_make_defence_passes_verbose_where_the_spec_does_not_set_it():
    from art_purifiers.defences import make_defence

    assert make_defence("dipdefend", verbose=True).verbose is True
    assert make_defence("dipdefend:verbose=False", verbose=True).verbose is False
    assert make_defence("dip", victim=dip_victim(), verbose=True).verbose is True
    assert not hasattr(make_defence("resampling", verbose=True), "verbose")  # only the defences that take it
