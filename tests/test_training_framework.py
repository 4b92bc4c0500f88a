"""The shared training framework, the trainer registry and ``art-purifiers train``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SHARED_CIFAR10, TinyCNN, needs_shared_data
from torch import nn

from art_purifiers.cli import main
from art_purifiers.training import TRAINERS, apply_overrides
from art_purifiers.training.framework import EMA, Distributed, Optimisation, RunContext, Schedule, run_stage
from art_purifiers.training.irad import PRESETS
from art_purifiers.training.loops import adversarial_pairs, pairs_cache_path


def test_schedule_warmup_then_cosine():
    schedule = Schedule(total=10, warmup=2)
    assert schedule.factor(0) == 0.5 and schedule.factor(1) == 1.0
    assert schedule.factor(2) == pytest.approx(1.0) and schedule.factor(10) == pytest.approx(0.0)
    assert Schedule(total=10, kind="constant").factor(7) == 1.0
    with pytest.raises(ValueError, match="warmup"):
        Schedule(total=10, warmup=11)


def test_optimisation_clips_schedules_and_averages():
    torch.manual_seed(0)
    layer = nn.Linear(3, 1)
    ema = EMA(layer, decay=0.5)
    before = layer.weight.detach().clone()
    optimisation = Optimisation(layer.parameters(), torch.optim.SGD(layer.parameters(), lr=1.0),
                                Schedule(total=4, warmup=2), clip_norm=0.1, ema=ema)
    loss = (layer(torch.ones(1, 3)) * 100).sum()
    optimisation.step(loss, 0)
    assert optimisation.optimizer.param_groups[0]["lr"] == 0.5  # warm-up halves the rate
    assert float(torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()) <= 0.1 + 1e-6  # clipped
    torch.testing.assert_close(ema.module.weight, 0.5 * before + 0.5 * layer.weight.detach())
    with pytest.raises(FloatingPointError, match="non-finite"):
        optimisation.step(torch.tensor(float("nan"), requires_grad=True), 1)


def test_stage_resumes_exactly(tmp_path):
    def train(iterations: int, folder) -> torch.Tensor:
        torch.manual_seed(0)
        layer = nn.Linear(2, 1)
        optimisation = Optimisation(layer.parameters(), torch.optim.Adam(layer.parameters(), lr=0.1),
                                    Schedule(total=6, warmup=1), ema=EMA(layer, 0.9))
        context = RunContext.create(folder, "cpu")

        def step(i: int) -> float:
            x = torch.randn(4, 2, generator=torch.Generator().manual_seed(i))
            return optimisation.step(layer(x).pow(2).mean(), i)

        validations = []
        result = run_stage(context, "stage", "stage", step, {"layer": layer}, optimisation, iterations, every=1,
                           log_every=1, validate=lambda i: validations.append(i) or {"i": i}, validate_every=2)
        assert [i for i, _ in result.validations] == validations
        return torch.cat([layer.weight.flatten(), optimisation.ema.module.weight.flatten()])

    straight = train(6, tmp_path / "straight")
    train(3, tmp_path / "resumed")
    torch.testing.assert_close(train(6, tmp_path / "resumed"), straight)


def test_stage_seconds_are_those_of_its_last_checkpoint(tmp_path):
    """A resumed run's seconds minus the interrupted run's are the resumed iterations' time, never negative: the
    stage reports the seconds its last checkpoint holds, not a later clock (the write of the checkpoint came after)."""
    layer = nn.Linear(2, 1)
    optimisation = Optimisation(layer.parameters(), torch.optim.SGD(layer.parameters(), lr=0.1), Schedule(total=4))
    context = RunContext.create(tmp_path, "cpu")

    def step(i: int) -> float:
        return optimisation.step(layer(torch.ones(1, 2)).pow(2).mean(), i)

    first = run_stage(context, "stage", "stage", step, {"layer": layer}, optimisation, 2, every=1).seconds
    assert first == torch.load(tmp_path / "stage.pt", weights_only=True)["seconds"]
    second = run_stage(context, "stage", "stage", step, {"layer": layer}, optimisation, 4, every=1).seconds
    assert second == torch.load(tmp_path / "stage.pt", weights_only=True)["seconds"] and second > first
    assert run_stage(context, "stage", "stage", step, {"layer": layer}, optimisation, 4).seconds == second


def test_run_context_checks_the_device(tmp_path):
    with pytest.raises(ValueError, match="device"):
        RunContext.create(tmp_path, "tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            RunContext.create(tmp_path, "cuda")


def test_overrides_are_typed_and_checked():
    config = apply_overrides(PRESETS["cpu"], ["stage1_iterations=7", "task=gaussian", "hidden=(8, 8)",
                                                "stage1_lr=1e-3"])
    assert (config.stage1_iterations, config.task, config.hidden, config.stage1_lr) == (7, "gaussian", (8, 8), 1e-3)
    for bad, message in [("nope=1", "Unknown setting"), ("stage1_iterations=1.5", "integer"),
                         ("stage1_lr=1e999", "finite"), ("task=typo", "task must be one of"), ("seed", "key=value"),
                         ("stage1_batch=0", "stage1_batch")]:
        with pytest.raises(ValueError, match=message):
            apply_overrides(PRESETS["cpu"], [bad])


def test_pairs_key_names_their_inputs(tmp_path):
    x = np.random.default_rng(0).uniform(size=(6, 3, 32, 32)).astype(np.float32)
    y = np.arange(6) % 10
    torch.manual_seed(0)
    a, b = TinyCNN().eval(), TinyCNN().eval()
    recipe = {"eps": 8 / 255, "step": 2 / 255, "steps": 10, "seed": 0}
    base = pairs_cache_path(tmp_path, a, x, y, recipe)
    assert base == pairs_cache_path(tmp_path, a, x, y, dict(recipe))
    others = [pairs_cache_path(tmp_path, b, x, y, recipe), pairs_cache_path(tmp_path, a, x[:5], y[:5], recipe)]
    others += [pairs_cache_path(tmp_path, a, x, y, {**recipe, key: value})
               for key, value in (("eps", 4 / 255), ("step", 1 / 255), ("steps", 5), ("seed", 1))]
    assert len({base, *others}) == 7


def _craft_as_rank(rank: int, world: int, port: int, folder: str) -> None:
    import os
    from pathlib import Path

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x = np.random.default_rng(0).uniform(size=(10, 3, 32, 32)).astype(np.float32)
    torch.manual_seed(0)
    pairs = adversarial_pairs(TinyCNN().eval(), x, np.arange(10) % 10, Path(folder) / "pairs.npz", steps=1,
                              batch_size=3, distributed=Distributed(rank, world))
    np.save(Path(folder) / f"rank{rank}.npy", pairs)
    dist.destroy_process_group()


def test_pairs_in_shares_equal_pairs_in_one_go(tmp_path):
    """Two gloo ranks each craft a share; both end with all the pairs, equal to one process crafting them all."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_craft_as_rank, args=(2, port, str(tmp_path)), nprocs=2)
    x = np.random.default_rng(0).uniform(size=(10, 3, 32, 32)).astype(np.float32)
    torch.manual_seed(0)
    whole = adversarial_pairs(TinyCNN().eval(), x, np.arange(10) % 10, None, steps=1, batch_size=3)
    for rank in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}.npy"), whole)
    assert (tmp_path / "pairs.npz").is_file()


def test_train_help_lists_methods_and_presets(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert all(method in text for method in TRAINERS) and "smoke" in text and "paper" in text


def test_train_refuses_bad_settings_before_work(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "irad", "--set", "stage1_iterations=-1", "--data-root", str(tmp_path)])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "irad", "--preset", "smoke", "--data-root", str(tmp_path)])  # no batches there
    assert exit_info.value.code == 2


@needs_shared_data
def test_train_smoke_preset_from_the_command_line(tmp_path):
    export = tmp_path / "irad.safetensors"
    assert main(["train", "irad", "--preset", "smoke", "--data-root", str(SHARED_CIFAR10), "--out", str(tmp_path),
                 "--export", str(export)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["images"] == 256 and report["source"] == "resnet32" and export.is_file()


def test_import_does_not_load_torch():
    """``import art_purifiers`` and the command line's argument checks stay light (lazy exports)."""
    code = "import sys, art_purifiers, art_purifiers.evaluation; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
