"""Training on the machines users have: the device and DDP backend of a run, precision, and ranks that agree."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from art_purifiers.training.framework import RunContext


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
    for bad, message in [("cuda:2", "sees 2 CUDA device"), ("cuda:x", "cpu, cuda or cuda:K"), ("gpu", "device")]:
        with pytest.raises(ValueError, match=message):
            RunContext.create(tmp_path, bad)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(ValueError, match="cuda:3 was asked for"):
        RunContext.create(tmp_path, "cuda")
