"""Training on the machines users have: the device and DDP backend of a run, precision, and ranks that agree."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import TinyCNN
from torch import nn

from art_purifiers.cli import main
from art_purifiers.training import dir as dir_training
from art_purifiers.training import idfr as idfr_training
from art_purifiers.training import irad as irad_training
from art_purifiers.training import victim_at as victim_at_training
from art_purifiers.training.framework import Optimisation, RunContext, run_stage, to_device
from art_purifiers.training.registry import provenance

TRAINERS = ("irad", "dir", "idfr", "victim-at")
#: The networks each trainer trains (what must run under autocast, and agree across ranks).
TRAINED = {"irad": {"ImplicitRepresentation", "SampleNet"}, "dir": {"MaskedViTDenoiser"},
           "idfr": {"InputDenoiser", "FeatureRestorer"}, "victim-at": {"CifarResNet"}}


@pytest.fixture
def fake_torchrun(monkeypatch):
    """Rank 1 of a two-rank ``torchrun`` job on a host with two (fake) GPUs; records what the set-up calls."""
    calls: list[tuple] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", torch.device(device))))
    monkeypatch.setattr(dist, "is_initialized", lambda: any(call[0] == "init" for call in calls))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **_: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "get_rank", lambda *_: 1)
    return calls


def test_cpu_run_on_a_gpu_host_uses_gloo(fake_torchrun, tmp_path):
    context = RunContext.create(tmp_path, "cpu")
    assert fake_torchrun == [("init", "gloo")]
    assert context.device == torch.device("cpu") and context.distributed.world == 2


def test_cuda_rank_takes_its_own_gpu_before_nccl(fake_torchrun, tmp_path):
    context = RunContext.create(tmp_path, "cuda")
    assert fake_torchrun == [("set_device", torch.device("cuda:1")), ("init", "nccl")]
    assert context.device == torch.device("cuda:1") and context.distributed.local_rank == 1


def test_default_device_under_torchrun_is_the_ranks_gpu(fake_torchrun, tmp_path):
    assert RunContext.create(tmp_path).device == torch.device("cuda:1")


def test_one_named_gpu_is_refused_for_several_ranks(fake_torchrun, tmp_path):
    with pytest.raises(ValueError, match="names one GPU, but torchrun started 2 ranks"):
        RunContext.create(tmp_path, "cuda:0")
    assert fake_torchrun == []  # refused before joining the job


def test_gpu_index_past_the_visible_ones_is_refused(fake_torchrun, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert RunContext.create(tmp_path, "cuda:1").device == torch.device("cuda:1")
    for bad, message in [("cuda:2", "sees 2 CUDA device"), ("cuda:x", "'cpu', 'cuda', 'cuda:N'"), ("gpu", "device")]:
        with pytest.raises(ValueError, match=message):
            RunContext.create(tmp_path, bad)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(ValueError, match="cuda:3': torch sees 2 CUDA device"):
        RunContext.create(tmp_path, "cuda")


def _tiny_run(method: str, folder: Path, precision: str = "fp32") -> tuple[dict[str, torch.Tensor], dict]:
    """A few iterations of every stage of ``method`` on 48 random images, on the CPU: the trained networks' tensors
    and the report."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(48, 3, 32, 32)).astype(np.float32), (np.arange(48) % 10).astype(np.int64)
    torch.manual_seed(0)
    model = TinyCNN().eval()
    if method == "irad":
        config = dataclasses.replace(irad_training.PRESETS["smoke"], images=None, stage1_iterations=2,
                                     stage2_iterations=2, stage1_batch=4, stage2_batch=4, precision=precision)
        representation, samplenet, report = irad_training.train_irad(config, x, y, model, folder)
        networks = {"representation": representation, "samplenet": samplenet}
    elif method == "dir":
        config = dataclasses.replace(dir_training.PRESETS["smoke"], images=None, stage1_iterations=2,
                                     stage2_iterations=2, validation_images=8, validate_every=1, precision=precision)
        denoiser, report = dir_training.train_dir(config, x, y, model, folder)
        networks = {"denoiser": denoiser}
    elif method == "idfr":
        config = dataclasses.replace(idfr_training.PRESETS["smoke"], images=None, attack_iterations=1,
                                     denoiser_iterations=2, restorer_iterations=2, validation_images=8,
                                     validate_every=1, precision=precision)
        denoiser, restorer, report = idfr_training.train_idfr(config, x, y, model, folder)
        networks = {"denoiser": denoiser, "restorer": restorer}
    else:
        config = dataclasses.replace(victim_at_training.PRESETS["smoke"], images=None, iterations=2, batch=8,
                                     validation_images=8, validate_every=1, precision=precision)
        victim, report = victim_at_training.train_victim_at(config, x, y, folder)
        networks = {"victim": victim}
    return {f"{key}.{name}": value for key, network in networks.items()
            for name, value in network.state_dict().items()}, report


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_context_needs_no_gpu():
    context = Optimisation([], torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1),
                           mixed_precision=True).autocast(torch.device("cuda"))
    assert isinstance(context, torch.autocast) and context.device == "cuda" and context.fast_dtype == torch.bfloat16
    plain = Optimisation([], torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1))
    assert not isinstance(plain.autocast(torch.device("cuda")), torch.autocast)


@pytest.mark.parametrize("method", TRAINERS)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_trainer_steps_under_its_precision(method, precision, tmp_path, caplog):
    """bf16: every trained network's training forward passes run under (CPU) autocast, and the precision is
    recorded; fp32: none does. The TF32 flags the run sets come back afterwards."""
    caplog.set_level(logging.INFO, logger="art_purifiers")  # a command-line test before may have quietened it
    seen: dict[str, set[bool]] = {}

    def record(module: nn.Module, *_) -> None:
        seen.setdefault(type(module).__name__, set()).add(_autocast_on())

    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    hook = nn.modules.module.register_module_forward_hook(record)
    try:
        _, report = _tiny_run(method, tmp_path, precision)
    finally:
        hook.remove()
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
    for network in TRAINED[method]:
        assert (True in seen[network]) == (precision == "bf16"), network
    assert report["precision"] == precision
    assert provenance({**report, "command": "test"})["precision"] == precision
    assert f"precision {precision}" in (tmp_path / "train.log").read_text()
    assert not [h for h in logging.getLogger().handlers if getattr(h, "baseFilename", "").startswith(str(tmp_path))]


def test_precision_is_checked(tmp_path):
    for config in (irad_training.PRESETS["smoke"], dir_training.PRESETS["smoke"], idfr_training.PRESETS["smoke"],
                   victim_at_training.PRESETS["smoke"]):
        with pytest.raises(ValueError, match="precision must be one of"):
            dataclasses.replace(config, precision="fp16")
    with pytest.raises(ValueError, match="'tf32' changes CUDA matrix products only"):
        RunContext.create(tmp_path, "cpu", precision="tf32")
    with pytest.raises(ValueError, match="precision must be one of"):
        RunContext.create(tmp_path, "cpu", precision="half")


@pytest.mark.parametrize(("arguments", "message"), [(["--precision", "fp16"], "precision must be one of"),
                                                    (["--set", "precision=half"], "precision must be one of"),
                                                    (["--precision", "tf32", "--device", "cpu"], "'tf32' changes")])
def test_train_refuses_a_bad_precision_before_loading_data(arguments, message, tmp_path, capsys):
    """Refused before the (empty) data folder is read, which would fail otherwise."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "victim-at", *arguments, "--data-root", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_precision_flags_are_set_for_the_run_and_restored(tmp_path):
    # Saved and restored by hand: the cuBLAS flag lives behind a module __getattr__, which pytest 9.2's monkeypatch
    # takes for an absent attribute and deletes at teardown.
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
        for precision, inside in [("fp32", (False, False)), ("bf16", (True, True))]:
            with RunContext.create(tmp_path, "cpu", precision=precision).precision_flags():
                assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == inside
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch < 2.9")
def test_precision_flags_keep_to_the_newer_tf32_settings(tmp_path):
    """A process that asked for TF32 through torch's newer ``fp32_precision`` settings (reading the older flags then
    raises) gets them switched for the run and back afterwards. In a fresh process: torch remembers the mix."""
    code = f"""
import torch
from art_purifiers.training.framework import RunContext
matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
matmul.fp32_precision = conv.fp32_precision = "tf32"
with RunContext.create({str(tmp_path)!r}, "cpu").precision_flags():
    inside = (matmul.fp32_precision, conv.fp32_precision)
print(inside, (matmul.fp32_precision, conv.fp32_precision))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.stdout.strip() == "('ieee', 'ieee') ('tf32', 'tf32')"


def _train_as_rank(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    for method in TRAINERS:
        tensors, _ = _tiny_run(method, Path(folder) / method)  # one folder for all ranks, as under torchrun
        torch.save(tensors, Path(folder) / f"{method}-rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory) -> Path:
    """Every trainer run by two gloo ranks (one spawn for all of them: starting the processes costs more than the
    training); the folder holding each rank's final weights."""
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("two_ranks")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_train_as_rank, args=(2, port, str(folder)), nprocs=2)
    return folder


@pytest.mark.parametrize("method", TRAINERS)
def test_two_ranks_end_every_trainer_with_the_same_weights(method, two_rank_runs):
    """Under torchrun (two gloo ranks, each on its own batches) every trainer trains one model: all ranks end with
    rank 0's weights, the ones it exports (parameters through DDP or averaged gradients, batch-norm statistics
    broadcast from rank 0 at the end of each stage)."""
    first, second = (torch.load(two_rank_runs / f"{method}-rank{rank}.pt", weights_only=True) for rank in range(2))
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0, msg=key)


def test_losses_are_read_at_log_lines_and_checkpoints(tmp_path):
    """A step's loss stays a tensor (no host sync per iteration); a non-finite one is refused, naming its iteration,
    before the next checkpoint could save its effect."""
    layer = nn.Linear(1, 1)
    optimisation = Optimisation(layer.parameters(), torch.optim.SGD(layer.parameters(), lr=0.1))
    returned = []

    def step(i: int) -> torch.Tensor:
        returned.append(torch.tensor(float("nan") if i == 2 else float(i)))
        return returned[-1]

    context = RunContext.create(tmp_path, "cpu")
    with pytest.raises(FloatingPointError, match="non-finite training loss nan at iteration 2"):
        run_stage(context, "stage", "stage", step, {"layer": layer}, optimisation, 10, every=2, log_every=5)
    assert len(returned) == 4 and torch.load(tmp_path / "stage.pt", weights_only=True)["iteration"] == 2
    result = run_stage(RunContext.create(tmp_path / "fine", "cpu"), "stage", "stage", lambda i: torch.tensor(i + 0.5),
                       {"layer": layer}, optimisation, 6, every=4, log_every=3)
    assert result.log == [(3, 1.5), (6, 4.5)]
    value = optimisation.step(layer(torch.ones(1, 1)).sum(), 0)
    assert isinstance(value, torch.Tensor) and not value.requires_grad


def test_to_device_leaves_cpu_tensors_alone():
    tensor = torch.ones(2)
    assert to_device(tensor, torch.device("cpu")) is tensor
