"""The device contract (docs/deploying.md, Devices): defaults, cuda:N, CPU draws, float32 output, determinism.

No test runs CUDA code: CUDA is faked by monkeypatching ``torch.cuda`` (a model without parameters moves nowhere),
and a default device other than the input's is ``meta``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from defences_under_contract import CASE_MODE_IDS, CASE_MODES, DEPLOY_MODE_IDS, DEPLOY_MODES, tiny_dip, tiny_dir_weights
from torch import nn

from art_purifiers.deploy import Deployment


class Parameterless(nn.Module):
    """Ten "logits" from the pixels: a model that ``.to(cuda:N)`` leaves alone, so a fake GPU can hold it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two fake GPUs, cuda:0 current; ``state["current"]`` follows ``torch.cuda.set_device``."""
    state = {"current": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["current"])
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: state.update(current=torch.device(device).index))
    return state


def art_devices(classifier) -> list[torch.device]:
    """The device of an ART classifier and of each of ART's own preprocessing steps."""
    own = [step._device for step in classifier.preprocessing_operations if not hasattr(step, "purify")]
    return [classifier._device, *own]


# ------------------------------------------------------------------------------------------------------------------
# Defaults and cuda:N
# ------------------------------------------------------------------------------------------------------------------
def test_classifier_on_an_indexed_gpu_ends_there(fake_cuda):
    classifier = Deployment(Parameterless()).classifier(device="cuda:1")
    assert art_devices(classifier) == [torch.device("cuda:1")] * 2
    assert fake_cuda["current"] == 0  # the current device is restored


def test_defaults_pick_cuda_when_it_exists(fake_cuda):
    from art_purifiers.evaluation.runner import art_classifier

    fake_cuda["current"] = 1
    assert art_devices(Deployment(Parameterless()).classifier()) == [torch.device("cuda:1")] * 2
    assert art_devices(art_classifier(Parameterless())) == [torch.device("cuda:1")] * 2
    assert art_devices(Deployment(Parameterless()).classifier(device="cuda")) == [torch.device("cuda:1")] * 2
    assert art_devices(Deployment(Parameterless()).classifier(device="cpu")) == [torch.device("cpu")] * 2


def test_defaults_are_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert art_devices(Deployment(Parameterless()).classifier()) == [torch.device("cpu")] * 2


def _recorded_devices(monkeypatch) -> list[torch.device]:
    """Make ``runner.correct`` record its classifier's device instead of predicting (no CUDA code runs)."""
    from art_purifiers.evaluation import runner

    devices = []
    monkeypatch.setattr(runner, "correct", lambda classifier, x, y, batch_size=128: (
        devices.append(classifier._device) or np.ones(len(x), dtype=bool)))
    return devices


def test_evaluate_defaults_to_cuda_and_honours_an_index(fake_cuda, monkeypatch):
    from art_purifiers.evaluation.runner import evaluate

    devices = _recorded_devices(monkeypatch)
    x, y = np.zeros((2, 3, 32, 32), dtype=np.float32), np.zeros(2, dtype=np.int64)
    evaluate(Parameterless(), {}, x, y, threats=("clean",))
    evaluate(Parameterless(), {}, x, y, threats=("clean",), device="cuda:1")
    assert devices == [torch.device("cuda:0"), torch.device("cuda:1")]


def test_with_loss_keeps_an_indexed_gpu(fake_cuda):
    from art_purifiers.evaluation.losses import CWMarginLoss, with_loss

    rebuilt = with_loss(Deployment(Parameterless()).classifier(device="cuda:1"), CWMarginLoss())
    assert art_devices(rebuilt) == [torch.device("cuda:1")] * 2 and fake_cuda["current"] == 0


@pytest.mark.parametrize(("device", "message"), [
    ("tpu", "device must be 'cpu', 'cuda', 'cuda:N' or None"),
    ("mps", "device must be 'cpu', 'cuda', 'cuda:N' or None"),
    (1, "device must be 'cpu', 'cuda', 'cuda:N' or None"),
    ("cuda:2", r"torch sees 2 CUDA device\(s\)"),
], ids=["unknown", "mps", "integer", "index-beyond"])
def test_bad_devices_are_refused_before_work(fake_cuda, device, message):
    with pytest.raises(ValueError, match=message):
        Deployment(Parameterless()).classifier(device=device)


def test_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        Deployment(Parameterless()).classifier(device="cuda:0")


def test_evaluate_refuses_a_bad_device(monkeypatch):
    from art_purifiers.evaluation.runner import evaluate

    _recorded_devices(monkeypatch)
    x, y = np.zeros((2, 3, 32, 32), dtype=np.float32), np.zeros(2, dtype=np.int64)
    with pytest.raises(ValueError, match="device must be"):
        evaluate(Parameterless(), {}, x, y, threats=("clean",), device="gpu")


# ------------------------------------------------------------------------------------------------------------------
# Defences: no CUDA context when built; the numpy path's device; bad device_type
# ------------------------------------------------------------------------------------------------------------------
def test_building_a_defence_starts_no_cuda_context(fake_cuda, monkeypatch):
    from art_purifiers import ARTPreprocessor, ResamplingPreprocessor

    def refuse():
        raise AssertionError("torch.cuda.current_device() called: a CUDA context")

    monkeypatch.setattr(torch.cuda, "current_device", refuse)
    defences = [ResamplingPreprocessor(), ARTPreprocessor("SpatialSmoothing")]  # device_type="gpu", the default
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert [d.device for d in defences] == [torch.device("cuda:1")] * 2  # looked up at first use


def test_device_type_is_checked():
    from art_purifiers import ResamplingPreprocessor

    assert ResamplingPreprocessor(device_type="cpu").device == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device_type must be one of \('cpu', 'gpu'\)"):
        ResamplingPreprocessor(device_type="cuda")


# ------------------------------------------------------------------------------------------------------------------
# DIP's victim moves with the defence (a distinct instance, or the copy made by configured)
# ------------------------------------------------------------------------------------------------------------------
def test_dip_victim_follows_the_input_device():
    dip = tiny_dip(seed=0, device_type="cpu").configured(seed=1)  # configured deep-copies the victim too
    dip._networks_to(torch.device("meta"))  # what forward does with the input's device
    assert {p.device.type for p in dip.classifier.parameters()} == {"meta"}


# ------------------------------------------------------------------------------------------------------------------
# Random draws on CPU generators work whatever the default device, with the same numbers
# ------------------------------------------------------------------------------------------------------------------
def _inputs() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize(("case", "mode"), CASE_MODES, ids=CASE_MODE_IDS)
def test_purifiers_under_another_default_device(case, mode):
    defence, x = case.factory(gradient=mode, seed=0, device_type="cpu"), _inputs()
    plain = defence.forward(x)[0]
    with torch.device("meta"):  # every tensor made without a device lands on meta and fails to meet CPU ones
        moved = defence.forward(x)[0]
    assert moved.device.type == "cpu" and torch.equal(moved, plain)


@pytest.mark.parametrize(("case", "mode"), DEPLOY_MODES, ids=DEPLOY_MODE_IDS)
def test_deployments_under_another_default_device(case, mode, tiny_model):
    deployment = case.factory(gradient=mode, seed=0, device_type="cpu").deploy(tiny_model)
    x = _inputs()
    with torch.no_grad():
        plain = deployment.logits(x)
        with torch.device("meta"):
            moved = deployment.logits(x)
    assert torch.equal(moved, plain)


# ------------------------------------------------------------------------------------------------------------------
# float32 output under a caller's autocast region
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("masks", [2, 3])
def test_dir_returns_float32_under_autocast(masks):
    from art_purifiers import DIRPreprocessor

    defence = DIRPreprocessor(tiny_dir_weights(), masks=masks, ratio=1 - 1 / masks, seed=0, device_type="cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = defence.forward(_inputs())[0]
    assert out.dtype == torch.float32


# ------------------------------------------------------------------------------------------------------------------
# The deterministic switch
# ------------------------------------------------------------------------------------------------------------------
def _flags() -> tuple:
    return (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


@pytest.mark.parametrize("workspace", [None, ":16:8"], ids=["workspace-unset", "workspace-set"])
def test_deterministic_sets_and_restores_the_flags(monkeypatch, workspace):
    from art_purifiers.devices import CUBLAS_WORKSPACE, deterministic

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    if workspace is None:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    else:
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", workspace)
    before = _flags()
    with pytest.raises(KeyError), deterministic():  # restored on an error too
        assert _flags() == (True, False, True, False, workspace or CUBLAS_WORKSPACE)
        raise KeyError
    assert _flags() == before


def test_deterministic_restores_warn_only_mode():
    from art_purifiers.devices import deterministic

    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with deterministic():
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize(("case", "mode"), CASE_MODES, ids=CASE_MODE_IDS)
def test_defences_on_the_cpu_are_the_same_inside_the_switch(case, mode):
    from art_purifiers.devices import deterministic

    defence = case.factory(gradient=mode, seed=0, device_type="cpu")
    plain = defence.forward(_inputs())[0]
    with deterministic():
        assert torch.equal(defence.forward(_inputs())[0], plain)


@pytest.mark.parametrize(("size_in", "size_out"), [((16, 16), (32, 32)), ((1, 1), (2, 2)), ((3, 5), (5, 9)),
                                                   ((2, 3), (7, 2)), ((4, 4), (4, 4))])
def test_resize_by_selection_is_pytorchs_bilinear(size_in, size_out):
    from art_purifiers.nn.resampling import resize_by_selection

    x = torch.randn(2, 3, *size_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)
    reference = F.interpolate(x, size=size_out, mode="bilinear", align_corners=False)
    ours = resize_by_selection(x, size_out)
    weights = torch.randn_like(reference)
    assert torch.allclose(ours, reference, atol=1e-12)
    assert torch.allclose(*(torch.autograd.grad(out, x, weights)[0] for out in (ours, reference)), atol=1e-12)


@pytest.mark.parametrize("network", ["dip", "idfr"])
def test_networks_resize_by_selection_off_the_cpu_in_deterministic_mode(monkeypatch, network):
    """DIP's and IDFR's upsampling: F.interpolate on the CPU and outside the switch (outputs unchanged), the
    selection form off the CPU inside it (shape-level on the meta device)."""
    from art_purifiers.devices import deterministic
    from art_purifiers.nn import dip, idfr, resampling

    used = []
    original = resampling.resize_by_selection
    monkeypatch.setattr(resampling, "resize_by_selection", lambda x, size: used.append(x.device.type) or
                        original(x, size))
    if network == "dip":
        model = dip.BatchedSkipNet(2, dip.SkipNetConfig(channels=(4, 8), skip=(2, 2)))
        inputs = torch.rand(2, 3, 16, 16)
    else:
        model, inputs = idfr.InputDenoiser(widths=(4, 4, 8, 8, 8, 8, 8, 8)), torch.rand(2, 3, 16, 16)
    model(inputs)
    with torch.device("meta"):
        model_on_meta = (dip.BatchedSkipNet(2, model.config) if network == "dip"
                         else idfr.InputDenoiser(widths=(4, 4, 8, 8, 8, 8, 8, 8)))
    model_on_meta(inputs.to("meta"))
    with deterministic():
        model(inputs)
        assert model_on_meta(inputs.to("meta")).shape == inputs.shape
    assert used and set(used) == {"meta"}


# ------------------------------------------------------------------------------------------------------------------
# The adversarial cache key covers the device type (GPU numerics differ), and CPU keys are those of before
# ------------------------------------------------------------------------------------------------------------------
def _oblivious_key(monkeypatch, device) -> str:
    from art_purifiers.evaluation import EvaluationSettings, runner
    from art_purifiers.keys import fingerprint

    _recorded_devices(monkeypatch)
    x, y = np.full((2, 3, 32, 32), 0.5, dtype=np.float32), np.arange(2, dtype=np.int64)
    run = runner._Evaluation(Parameterless(), {}, x, y, EvaluationSettings(device=device), None)
    return fingerprint("adv-v2", "oblivious", *run.base_key)


def test_cache_keys_cover_the_device_type_and_keep_cpu_keys(fake_cuda, monkeypatch):
    # Computed by the code before the device joined the key (commit cc55a2e): CPU caches stay valid.
    assert _oblivious_key(monkeypatch, "cpu") == "2e29ef41a5f7b2f37217"
    gpu = _oblivious_key(monkeypatch, "cuda:0")
    assert gpu != "2e29ef41a5f7b2f37217" and _oblivious_key(monkeypatch, "cuda:1") == gpu  # the type, not the index


# ------------------------------------------------------------------------------------------------------------------
# The command line: --device checked up front, --deterministic for the run only
# ------------------------------------------------------------------------------------------------------------------
def test_cli_refuses_a_gpu_index_beyond_the_gpus(fake_cuda, capsys):
    from art_purifiers.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--device", "cuda:5", "--quiet", "--no-cache"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and "--device 'cuda:5': torch sees 2" in error


def test_cli_deterministic_run_restores_the_flags(monkeypatch, capsys):
    from art_purifiers import cli

    seen = []

    def stop(*args, **kwargs):  # records the flags during the run, then ends it
        seen.append(_flags())
        raise KeyboardInterrupt

    monkeypatch.setattr("art_purifiers.evaluation.evaluate", stop)
    before = _flags()
    with pytest.raises(KeyboardInterrupt):
        cli.main(["evaluate", "--n", "2", "--attack", "fgsm", "--threat", "clean", "--device", "cpu", "--quiet",
                  "--no-cache", "--deterministic"])
    assert seen[0][:3] == (True, False, True) and _flags() == before
