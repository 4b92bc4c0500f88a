"""The trainers' vectorised augmentation (issue 27): the same random draws and the same tensors as the per-image
loops it replaced (kept in ``benchmarks/augment.py`` as the reference), on inputs on another device than the
generator's, and the benchmark's quick run."""

from __future__ import annotations

import logging

import pytest
import torch
from benchmark_scripts import load_benchmark

from art_purifiers.training.idfr import ConvexPairs
from art_purifiers.training.irad import stage1_inputs
from art_purifiers.training.victim_at import _augment

SEEDS = range(4)


def _benchmark():
    """benchmarks/augment.py as a module: the old loops and the timing."""
    return load_benchmark("augment")


def _same_draws(old, new, seed: int) -> None:
    """``old`` and ``new`` give equal tensors from equal generators and leave them in the same state."""
    first, second = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    expected, got = old(first), new(second)
    expected, got = (x if isinstance(x, tuple) else (x,) for x in (expected, got))
    for a, b in zip(expected, got, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(first.get_state(), second.get_state())


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (9, 3, 32, 32), (5, 1, 7, 12), (4, 2, 13, 5)])
@pytest.mark.parametrize("seed", SEEDS)
def test_crops_and_flips_match_the_loop(shape, seed):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(100 + seed))
    _same_draws(lambda g: _benchmark().loop_crops_and_flips(images, g), lambda g: _augment(images, g), seed)


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (9, 3, 32, 32), (5, 1, 16, 12), (3, 3, 3, 7), (2, 3, 9, 9)])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inpainting_squares_match_the_loop(shape, seed, dtype):
    clean = torch.rand(shape, generator=torch.Generator().manual_seed(100 + seed), dtype=dtype)
    _same_draws(lambda g: _benchmark().loop_inpainting(clean, g),
                lambda g: stage1_inputs("inpainting", clean, None, 0.0, g), seed)


def _pairs(images: int, per_image: int, classes: int, seed: int) -> ConvexPairs:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(6, classes)
    labels = torch.randint(classes, (images,), generator=generator)
    labels[:classes] = torch.arange(classes)  # every class present
    return ConvexPairs(torch.randn(images, 6, generator=generator), torch.randn(images * per_image, 6,
                       generator=generator), labels, labels.repeat(per_image), head, "paper")


@pytest.mark.parametrize(("images", "per_image", "classes"), [(4, 1, 2), (40, 1, 10), (300, 3, 10), (50, 2, 3)])
@pytest.mark.parametrize("batch", [1, 7, 96])
@pytest.mark.parametrize("seed", SEEDS)
def test_convex_pairs_match_the_loop(images, per_image, classes, batch, seed):
    pairs = _pairs(images, per_image, classes, seed)
    _same_draws(lambda g: _benchmark().loop_pairs(pairs, batch, g), lambda g: pairs.draw(batch, g), seed)


def test_convex_pairs_with_a_one_member_pool():
    # Two images of class 0, both classified correctly: its second pool falls back to the whole class.
    head = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    pairs = ConvexPairs(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                        torch.tensor([0, 1]), torch.tensor([0, 1]), head, "paper")
    for seed in SEEDS:
        _same_draws(lambda g: _benchmark().loop_pairs(pairs, 11, g), lambda g: pairs.draw(11, g), seed)


def test_augmentation_on_another_device_than_the_generator():
    """Inputs on the ``meta`` device: the draws stay on the CPU generator, only indices move."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 32, 32, device="meta")
    assert _augment(images, generator).device.type == "meta"
    assert stage1_inputs("inpainting", images, None, 0.0, generator).shape == (5, 3, 32, 32)
    pairs = _pairs(40, 1, 10, 0)
    expected = pairs.draw(7, torch.Generator().manual_seed(3))
    pairs.h = pairs.h.to("meta")
    mixed, labels = pairs.draw(7, torch.Generator().manual_seed(3))
    assert mixed.device.type == "meta" and mixed.shape == (7, 6) and torch.equal(labels, expected[1])


def test_augmentation_under_another_default_device():
    """``torch.set_default_device`` does not move the draws off the generator's device."""
    images = torch.rand(5, 3, 32, 32)
    pairs = _pairs(40, 1, 10, 0)
    expected = (_augment(images, torch.Generator().manual_seed(0)),
                stage1_inputs("inpainting", images, None, 0.0, torch.Generator().manual_seed(0)),
                pairs.draw(7, torch.Generator().manual_seed(0)))
    with torch.device("meta"):
        got = (_augment(images, torch.Generator().manual_seed(0)),
               stage1_inputs("inpainting", images, None, 0.0, torch.Generator().manual_seed(0)),
               pairs.draw(7, torch.Generator().manual_seed(0)))
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    assert all(torch.equal(a, b) for a, b in zip(expected[2], got[2], strict=True))


def test_benchmark_quick_run(tmp_path):
    out = tmp_path / "augment.json"
    handlers = list(logging.getLogger().handlers)
    result = _benchmark().main(["--quick", "--json", str(out)])
    assert logging.getLogger().handlers == handlers  # the runs' log files are closed with their folder
    assert out.exists() and result["mode"] == "quick" and result["machine"]["threads"] >= 1
    assert set(result["functions"]) == set(result["steps"]) == {"victim_at_crops_and_flips", "irad_inpainting",
                                                                 "idfr_convex_pairs"}
    for rows in result["functions"].values():
        assert all(row["identical"] and row["old_seconds"] > 0 and row["new_seconds"] > 0 for row in rows)
    for step in result["steps"].values():
        assert step["seconds_per_step"] > 0 and 0 < step["new_share"] < 1 and 0 < step["old_share"] < 1


@pytest.mark.parametrize(("argv", "message"), [(["--repeats", "0"], "--repeats"),
                                               (["--device", "nowhere"], "--device")])
def test_benchmark_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        _benchmark().main(argv)
    assert message in capsys.readouterr().err
