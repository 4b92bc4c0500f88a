"""The benchmark helpers: timing, multiply-accumulate counts and peak memory."""

from __future__ import annotations

import pytest
import torch
from benchmark_scripts import load_benchmark
from defences_under_contract import ConvPurifier

from art_purifiers import ResamplingPreprocessor
from art_purifiers.deploy import Deployment
from art_purifiers.evaluation.benchmark import (
    machine,
    matmul_flops_per_second,
    multiply_accumulates,
    peak_memory_bytes,
    repeated_sample,
    time_deployment,
    time_purifier,
)


def test_time_purifier_counts_every_image():
    x = torch.rand(8, 3, 16, 16)
    defence = ResamplingPreprocessor(batch_size=32)
    timing = time_purifier(defence, x, batch_size=4, repeats=2)
    assert defence.batch_size == 32  # the defence's own chunking is restored
    assert (timing.images, timing.batch_size, timing.device) == (8, 4, "cpu")
    assert timing.seconds > 0
    assert abs(timing.images_per_second * timing.seconds_per_image - 1) < 1e-9
    assert timing.to_dict()["images_per_second"] == timing.images_per_second


def test_time_purifier_needs_whole_batches():
    with pytest.raises(ValueError, match="multiple of batch_size"):
        time_purifier(ResamplingPreprocessor(), torch.rand(5, 3, 8, 8), batch_size=2)


def test_multiply_accumulates_of_a_convolution():
    # ConvPurifier: one 3x3 convolution 3 -> 3 channels: 3 * 3 * 9 MACs per output pixel.
    macs = multiply_accumulates(ConvPurifier(), torch.rand(2, 3, 10, 12))
    assert macs == 3 * 3 * 9 * 10 * 12


def test_peak_memory_and_machine():
    assert peak_memory_bytes(torch.device("cpu")) > 10 * 2**20
    assert machine()["threads"] >= 1
    assert len(machine().get("load_average", [0, 0, 0])) == 3


def test_deployment_timing_and_macs(tiny_model):
    x = torch.rand(4, 3, 32, 32)
    bare = Deployment(tiny_model)
    defended = ResamplingPreprocessor(device_type="cpu").deploy(tiny_model)
    timing = time_deployment(defended, x, batch_size=2, repeats=1)
    assert timing.images == 4 and timing.seconds > 0
    assert multiply_accumulates(defended, x) >= multiply_accumulates(bare, x) > 0


def test_repeated_sample_fills_the_count():
    x = repeated_sample(450, torch.device("cpu"))
    assert x.shape == (450, 3, 32, 32) and torch.equal(x[200:400], x[:200])


def test_forward_backward_timing_and_macs():
    """With backward, the timing runs to the input's gradient and the count adds the backward pass: for a frozen
    convolution, its gradient with respect to the input, as many multiply-accumulates as the forward pass."""
    x = torch.rand(4, 3, 10, 12)
    defence = ConvPurifier(batch_size=16)
    timing = time_purifier(defence, x, batch_size=2, repeats=1, backward=True)
    assert timing.images == 4 and timing.seconds > 0 and defence.batch_size == 16
    forward = 3 * 3 * 9 * 120  # per image
    assert multiply_accumulates(defence, x) == forward
    assert multiply_accumulates(defence, x, backward=True) == 2 * forward


def test_matmul_flops_per_second():
    assert matmul_flops_per_second(torch.device("cpu"), size=64, repeats=2) > 0
    for bad in ({"size": 0}, {"repeats": 0}, {"size": 8.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            matmul_flops_per_second(torch.device("cpu"), **bad)


# --- benchmarks/gpu.py: the prepared GPU benchmark, run here in its CPU dry-run mode ---------------------------------

def _gpu_benchmark():
    """benchmarks/gpu.py as a module."""
    return load_benchmark("gpu")


def _has_figures(item: dict) -> bool:
    """Whether a result holds at least one finite number (directly or one level down)."""
    import math

    values = [v for value in item.values() for v in (value.values() if isinstance(value, dict) else [value])]
    values += [v for value in item.values() if isinstance(value, dict) for inner in value.values()
               if isinstance(inner, dict) for v in inner.values()]
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def test_gpu_benchmark_dry_run_writes_every_section(tmp_path, monkeypatch):
    import json

    monkeypatch.delenv("ART_PURIFIERS_CIFAR10", raising=False)
    gpu = _gpu_benchmark()
    out = tmp_path / "gpu.json"
    gpu.main(["--dry-run", "--out", str(out), "--commit", "abc123"])
    result = json.loads(out.read_text())
    assert result["mode"] == "dry-run" and result["device"] == "cpu"
    assert result["machine"]["commit"] == "abc123" and result["machine"]["art_purifiers"]
    assert "random images" in result["data"]["training"] and "bundled sample" in result["data"]["evaluation"]
    assert list(result["sections"]) == list(gpu.SECTIONS)
    for name, section in result["sections"].items():
        assert section["status"] == "ok", (name, section.get("error"))
        assert section["seconds"] >= 0 and section["peak_memory_bytes"] > 0
        assert section["results"], name
        for skip in section["skipped"]:
            assert skip["reason"], (name, skip)
        for item in section["results"]:
            # bf16 is the trainers' own option: on the CPU a trainer may refuse it (recorded as an error).
            if name == "training" and item["precision"] == "bf16" and "error" in item:
                continue
            assert "error" not in item, (name, item)
            assert _has_figures(item), (name, item)
    by_item = {item["item"]: item for item in result["sections"]["throughput"]["results"]}
    for spec, _, _ in gpu.DRY_RUN.throughput:
        for method in ("predict", "loss_gradient"):
            assert by_item[f"{spec} {method}"]["images_per_second"] > 0
    for item in result["sections"]["agreement"]["results"]:
        # The dry run compares the CPU with itself: the same code must give the same numbers.
        assert item["tf32_off"]["purified_max_abs_difference"] == 0 == item["tf32_on"]["logits_max_abs_difference"]
    trained = {(item["trainer"], item["precision"]) for section in ("results", "skipped")
               for item in result["sections"]["training"][section]}
    assert trained == {(method, precision) for method in gpu.STAGES for precision in gpu.PRECISIONS}
    for item in result["sections"]["training"]["results"]:
        if "stages" in item:
            assert all(stage["iterations_per_second"] > 0 for stage in item["stages"].values())
    assert result["sections"]["evaluate"]["results"][0]["wall_seconds"] > 0


def test_gpu_benchmark_records_a_spent_budget_as_skipped(tmp_path):
    import json

    gpu = _gpu_benchmark()
    out = tmp_path / "gpu.json"
    gpu.main(["--dry-run", "--out", str(out), "--budget", "1e-9", "--sections", "pgd"])
    section = json.loads(out.read_text())["sections"]["pgd"]
    assert section["status"] == "skipped" and "budget" in section["reason"]


def test_gpu_benchmark_records_failures_and_goes_on(tmp_path, monkeypatch):
    import json
    import time

    gpu = _gpu_benchmark()

    def broken(bench, items):
        raise RuntimeError("planted failure")

    monkeypatch.setitem(gpu.RUNNERS, "pgd", broken)
    out = tmp_path / "gpu.json"
    gpu.main(["--dry-run", "--out", str(out), "--sections", "pgd", "agreement"])
    sections = json.loads(out.read_text())["sections"]
    assert sections["pgd"]["status"] == "error" and "planted failure" in sections["pgd"]["error"]
    assert sections["agreement"]["status"] == "ok" and sections["agreement"]["results"]

    items = gpu.Items(gpu.make_bench(gpu.parse_args(["--dry-run", "--out", str(out)]), time.perf_counter()),
                      time.perf_counter() + 60)

    def unsupported():
        raise gpu.Unsupported("not here")

    assert items.run("fails", lambda: 1 / 0) is None
    assert items.run("unsupported", unsupported) is None
    assert items.run("works", lambda: {"seconds": 1.0}) == {"seconds": 1.0}
    items.deadline = time.perf_counter() - 1
    assert items.run("late", lambda: {"seconds": 1.0}) is None
    record = items.record()
    assert [r["item"] for r in record["results"]] == ["fails", "works"]
    assert "ZeroDivisionError" in record["results"][0]["error"]
    assert [(r["item"], r["reason"]) for r in record["skipped"]] == [
        ("unsupported", "not here"), ("late", "the section's time budget was spent")]


def test_gpu_benchmark_precision_goes_through_the_trainers_setting():
    import dataclasses

    gpu = _gpu_benchmark()

    @dataclasses.dataclass(frozen=True)
    class WithPrecision:
        precision: str = "fp32"

        def __post_init__(self):
            if self.precision not in ("fp32", "tf32", "bfloat16"):
                raise ValueError("precision")

    @dataclasses.dataclass(frozen=True)
    class Without:
        batch: int = 2

    assert gpu.precision_settings(WithPrecision(), "bf16")[0] == ["precision=bfloat16"]
    assert gpu.precision_settings(WithPrecision(), "tf32")[0] == ["precision=tf32"]
    assert gpu.precision_settings(Without(), "tf32")[0] == []
    with pytest.raises(gpu.Unsupported, match="not supported"):
        gpu.precision_settings(Without(), "bf16")


def test_gpu_benchmark_tf32_switch_is_restored():
    gpu = _gpu_benchmark()
    before = gpu.tf32_state()
    with gpu.tf32(True):
        on = gpu.tf32_state()
        with gpu.tf32(False):
            off = gpu.tf32_state()
    assert gpu.tf32_state() == before
    assert set(on.values()) == {True} and set(off.values()) == {False}


@pytest.mark.parametrize("arguments, message", [
    (["--budget", "0"], "--budget"),
    (["--budget", "nan"], "--budget"),
    (["--budget", "-5"], "--budget"),
    (["--data-root", "/no/such/folder"], "--data-root"),
    (["--sections", "nothing"], "invalid choice"),
])
def test_gpu_benchmark_refuses_bad_arguments(tmp_path, capsys, arguments, message):
    gpu = _gpu_benchmark()
    with pytest.raises(SystemExit):
        gpu.main(["--dry-run", "--out", str(tmp_path / "gpu.json"), *arguments])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "gpu.json").exists()


def test_gpu_benchmark_refuses_a_bad_output_or_a_missing_gpu(tmp_path, capsys):
    gpu = _gpu_benchmark()
    for out in (tmp_path, tmp_path / "missing" / "gpu.json"):
        with pytest.raises(SystemExit):
            gpu.main(["--dry-run", "--out", str(out)])
        assert "--out" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            gpu.main(["--out", str(tmp_path / "gpu.json")])
        assert "--dry-run" in capsys.readouterr().err
