"""Reliability battery (issue #15): every bad input gets the exact error type and a message that says what is wrong.

Each case is fast (tiny networks, a few pixels): parameters are refused at construction, DIP's image-size minimum
before any fitting, a non-finite defence output before it is scored, a bad CIFAR-10 batch before anything in it
runs, a bad command-line argument before any model or data loads, and a bad weight file when it is read (corrupt
adversarial-example caches: tests/test_deploy.py). Cases are grouped by what they guard; add new ones to the
matching table.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from defences_under_contract import TINY_DIP, dip_victim, tiny_dip, tiny_dipdefend, tiny_irad_weights

from art_purifiers import IRADPreprocessor, ResamplingPreprocessor
from art_purifiers.base import MAX_SEED, PurifierPreprocessor
from art_purifiers.cli import main
from art_purifiers.data.cifar10 import _read_batch, load_cifar10_uint8
from art_purifiers.defences.dip import DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.defences.dir import DIRPreprocessor
from art_purifiers.defences.idfr import IDFRDefence, IDFRPreprocessor
from art_purifiers.models import load_victim
from art_purifiers.nn.dip import SkipNetConfig, dip_trace
from art_purifiers.training.dir import PRESETS as DIR_PRESETS
from art_purifiers.training.registry import apply_overrides
from art_purifiers.weights import load_into, load_weights, read_metadata, save_safetensors

NAN, INF = float("nan"), float("inf")


def resampling(**kwargs) -> ResamplingPreprocessor:
    return ResamplingPreprocessor(device_type="cpu", **kwargs)


def irad(**kwargs) -> IRADPreprocessor:
    return IRADPreprocessor(tiny_irad_weights(), **{"sampler": "variant", "device_type": "cpu", **kwargs})


def dip(**kwargs) -> DIPPreprocessor:
    kwargs = {"classifier": dip_victim(), "network": TINY_DIP, "iterations": 6, "snapshots": 3, "warmup": 0,
              "grid": 4, "keep": 2, "device_type": "cpu", **kwargs}
    return DIPPreprocessor(**kwargs)


def dipdefend(**kwargs) -> DIPDefendPreprocessor:
    return DIPDefendPreprocessor(**{"network": TINY_DIP, "iterations": 6, "device_type": "cpu", **kwargs})


# --------------------------------------------------------------------------------------------------------------
# Parameters: refused when set (constructor), naming the parameter
# --------------------------------------------------------------------------------------------------------------
BAD_PARAMETERS = [
    # Shared by every defence (PurifierPreprocessor).
    (resampling, {"seed": 2**64}, "seed must be an integer in"),
    (resampling, {"seed": MAX_SEED + 1}, "seed must be an integer in"),
    (resampling, {"seed": -1}, "seed must be an integer in"),
    (resampling, {"seed": 1.5}, "seed must be an integer"),
    (resampling, {"seed": True}, "seed must be an integer"),
    (resampling, {"batch_size": 0}, "batch_size must be an integer in"),
    (resampling, {"batch_size": 2.0}, "batch_size must be an integer"),
    (resampling, {"channels": 0}, "channels must be an integer in"),
    (resampling, {"clip_values": (0.0, INF)}, r"clip_values\[1\] \(max\) must be finite"),
    (resampling, {"clip_values": (-INF, 1.0)}, r"clip_values\[0\] \(min\) must be finite"),
    (resampling, {"clip_values": (NAN, 1.0)}, r"clip_values\[0\] \(min\) must be finite"),
    (resampling, {"clip_values": (1.0, 0.0)}, "clip_values must be a pair"),
    (resampling, {"clip_values": (0.0,)}, "clip_values must be a pair"),
    (resampling, {"clip_values": ("0", 1.0)}, r"clip_values\[0\] \(min\) must be a number"),
    (resampling, {"gradient": "approximate"}, "gradient must be one of"),
    # ResamplingPreprocessor and IRADPreprocessor.
    (resampling, {"magnitude": NAN}, "magnitude .* must be finite"),
    (resampling, {"magnitude": INF}, "magnitude .* must be finite"),
    (resampling, {"magnitude": -1.0}, "magnitude .* must lie in"),
    (resampling, {"magnitude": "1.5"}, "magnitude .* must be a number"),
    (irad, {"magnitude": NAN}, "magnitude .* must be finite"),
    (irad, {"magnitude": INF}, "magnitude .* must be finite"),
    (irad, {"sampler": "bicubic"}, "sampler must be one of"),
    # Both DIP defences.
    (dip, {"step": NAN}, "step must be finite"),
    (dip, {"step": -0.1}, "step must lie in"),
    (dip, {"lr": INF}, "lr must be finite"),
    (dip, {"lr": 0.0}, r"lr must lie in \(0"),
    (dip, {"noise_scale": INF}, "noise_scale must be finite"),
    (dip, {"noise_scale": 0.0}, "noise_scale must lie in"),
    (dip, {"input_jitter": INF}, "input_jitter must be finite"),
    (dip, {"input_jitter": -0.1}, "input_jitter must lie in"),
    (dip, {"iterations": 1}, "iterations must be an integer in"),
    (dip, {"iterations": 6.0}, "iterations must be an integer"),
    (dip, {"iterations": NAN}, "iterations must be an integer"),
    (dip, {"snapshots": 7}, r"snapshots \(at most iterations=6\) must be an integer in \[2, 6\]"),
    (dip, {"snapshots": 1}, "snapshots .* must be an integer in"),
    (dip, {"warmup": 6}, r"warmup \(below iterations=6\) must be an integer in \[0, 5\]"),
    (dip, {"warmup": -1}, "warmup .* must be an integer in"),
    (dip, {"keep": 0}, "keep must be an integer in"),
    (dip, {"grid": 0}, "grid must be an integer in"),
    (dip, {"grid": 1.5}, "grid must be an integer"),
    (dip, {"ssim_threshold": NAN}, "ssim_threshold must be finite"),
    (dip, {"ssim_threshold": 1.5}, "ssim_threshold must lie in"),
    (dip, {"network": "huge"}, "network must be one of"),
    (dip, {"network": ["small"]}, "network must be one of"),
    (dip, {"classifier": None}, "needs the victim .* classifier must be a torch nn.Module .* got NoneType"),
    (dip, {"classifier": "resnet20"}, "classifier must be a torch nn.Module .* got str"),
    (dipdefend, {"input_jitter": INF}, "input_jitter must be finite"),
    (dipdefend, {"lr": NAN}, "lr must be finite"),
    (dipdefend, {"smoothing": 0.0}, r"smoothing must lie in \(0"),
    (dipdefend, {"smoothing": 1.5}, "smoothing must lie in"),
    (dipdefend, {"smoothing": NAN}, "smoothing must be finite"),
    (dipdefend, {"gradient": "exact"}, "not differentiable"),
]


@pytest.mark.parametrize(("factory", "kwargs", "message"), BAD_PARAMETERS,
                         ids=[f"{f.__name__}-{k}" for f, k, _ in BAD_PARAMETERS])
def test_bad_parameter_is_refused_at_construction(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [(resampling, {"magnitude": NAN}, "magnitude"), (resampling, {"seed": 2**64}, "seed"),
     (resampling, {"clip_values": (0.0, INF)}, "clip_values"), (dip, {"lr": INF}, "lr"),
     (dipdefend, {"smoothing": NAN}, "smoothing")],
)
def test_bad_parameter_is_refused_by_set_params(factory, kwargs, message):
    defence = factory()
    with pytest.raises(ValueError, match=message):
        defence.set_params(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"channels": (4, 0)}, r"channels\[1\] must be an integer in"), ({"skip": (2, -1)}, r"skip\[1\]"),
     ({"kernel": 2}, "kernel must be odd"), ({"input_depth": 0}, "input_depth must be an integer in"),
     ({"channels": (4,)}, "one entry per scale")],
)
def test_bad_network_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SkipNetConfig(**{"channels": (4, 8), "skip": (2, 2), **kwargs})


@pytest.mark.parametrize(
    ("assignment", "message"),
    [("representation=kl", "representation must be one of"), ("representation=1", "representation must be one of"),
     ("clip_norm=0", r"clip_norm must lie in \(0"), ("clip_norm=-1", r"clip_norm must lie in \(0"),
     ("clip_norm='1'", "clip_norm must be a number"), ("clip_norm=True", "clip_norm must be a number"),
     ("clip_norm=nan", "not a Python literal"), ("alpha=-1", "alpha must lie in"),
     ("clean_weight=-0.5", "clean_weight must lie in"), ("stage2_optimizer=adam", "stage2_optimizer must be one of")],
)
def test_bad_dir_training_setting_is_refused(assignment, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(DIR_PRESETS["cpu"], [assignment])


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_non_finite_dir_clip_norm_is_refused(value):
    with pytest.raises(ValueError, match="clip_norm must be finite"):
        dataclasses.replace(DIR_PRESETS["cpu"], clip_norm=value)


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    defence = dip(iterations=np.int64(30), snapshots=np.int32(3), seed=np.uint64(MAX_SEED), batch_size=np.int16(2),
                  lr=np.float32(0.01), step=np.float64(0.25))
    assert (defence.iterations, defence.snapshots, defence.seed, defence.batch_size) == (30, 3, MAX_SEED, 2)
    assert all(type(v) is int for v in (defence.iterations, defence.snapshots, defence.seed, defence.batch_size))
    assert type(defence.lr) is float and type(defence.step) is float
    assert resampling(clip_values=np.array([0, 1])).clip_values == (0.0, 1.0)
    config = SkipNetConfig(channels=[np.int64(4), 8], skip=(np.int8(2), 2))
    assert config == TINY_DIP and type(config.channels[0]) is int


def test_largest_seed_runs():
    x = torch.rand(1, 3, 8, 8)
    assert resampling(sampler="variant", seed=MAX_SEED).forward(x)[0].shape == x.shape


# --------------------------------------------------------------------------------------------------------------
# DIP: images too small for the network, refused before fitting (not inside batch norm)
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (4, 4), (4, 32), (32, 3)])
@pytest.mark.parametrize("factory", [tiny_dip, tiny_dipdefend], ids=["dip", "dipdefend"])
def test_dip_refuses_images_below_its_minimum_side(factory, size):
    defence = factory(device_type="cpu", seed=0)
    name = type(defence).__name__
    with pytest.raises(ValueError, match=rf"{name} needs images of at least 5x5 pixels .* got {size[0]}x{size[1]}"):
        defence.forward(torch.rand(2, 3, *size))


def test_dip_minimum_side_runs_and_follows_the_network():
    assert tiny_dip(device_type="cpu", seed=0).forward(torch.rand(1, 3, 5, 5))[0].shape == (1, 3, 5, 5)
    assert DIPPreprocessor(dip_victim()).network_config.min_side == 9  # "small": 3 scales
    with pytest.raises(ValueError, match="needs images of at least 5x5 pixels"):
        dip_trace(torch.rand(1, 3, 4, 4), TINY_DIP, 2, [torch.Generator().manual_seed(0)])


# --------------------------------------------------------------------------------------------------------------
# Non-finite defence output: raised, never clipped into a valid-looking image and scored
# --------------------------------------------------------------------------------------------------------------
class _Broken(PurifierPreprocessor):
    """Test double returning ``x + offset`` (NaN or infinite values on request)."""

    def __init__(self, offset: float, **kwargs) -> None:
        super().__init__(device_type="cpu", **kwargs)
        self.offset = offset
        self._check_params()

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x + self.offset


@pytest.mark.parametrize("gradient", ["exact", "bpda"])
@pytest.mark.parametrize("offset", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
def test_non_finite_output_raises(offset, gradient):
    with pytest.raises(ValueError, match="_Broken produced non-finite values; check its weights and parameters"):
        _Broken(offset, gradient=gradient).forward(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="_Broken produced non-finite values"):
        _Broken(offset, gradient=gradient)(np.random.default_rng(0).uniform(size=(2, 3, 4, 4)).astype(np.float32))


def test_non_finite_weights_raise_naming_the_defence():
    defence = IRADPreprocessor(tiny_irad_weights(), "none", device_type="cpu")
    with torch.no_grad():
        next(defence.representation.parameters()).fill_(NAN)
    with pytest.raises(ValueError, match="IRADPreprocessor produced non-finite values"):
        defence.forward(torch.rand(1, 3, 8, 8))


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 batches: no code runs from data; every malformed batch is one ValueError naming the file
# --------------------------------------------------------------------------------------------------------------
class _Payload:
    """Pickles as a call of ``function(*arguments)``: what a crafted batch would run on an unrestricted load."""

    def __init__(self, function, *arguments) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def _valid_batch(rows: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {b"batch_label": b"testing batch 1 of 1", b"labels": list(rng.integers(0, 10, size=rows).tolist()),
            b"data": rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8)}


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_valid_batch_loads(tmp_path, protocol):
    batch = _valid_batch()
    images, labels = _read_batch(_write(tmp_path / "test_batch", pickle.dumps(batch, protocol=protocol)))
    assert images.dtype == np.uint8 and images.shape == (3, 3, 32, 32) and labels.dtype == np.int64
    np.testing.assert_array_equal(images.reshape(3, -1), batch[b"data"])
    np.testing.assert_array_equal(labels, batch[b"labels"])


@pytest.mark.parametrize("where", ["top", "inside"])
@pytest.mark.parametrize("call", ["open", "system"])
def test_batch_that_would_run_code_is_refused_and_nothing_runs(tmp_path, call, where):
    marker = tmp_path / "marker"
    payload = _Payload(open, str(marker), "w") if call == "open" else _Payload(os.system, f"touch {marker}")
    content = pickle.dumps(payload if where == "top" else {**_valid_batch(), b"data": payload}, protocol=2)
    path = _write(tmp_path / "test_batch", content)
    global_name = "io.open" if call == "open" else f"{os.system.__module__}.system"
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: refused to unpickle the global "
                                         rf"{re.escape(global_name)}.*nothing was run"):
        _read_batch(path)
    assert not marker.exists()


MALFORMED = [
    ("empty", lambda: b"", "not a readable CIFAR-10 python batch"),
    ("truncated", lambda: pickle.dumps(_valid_batch(), protocol=2)[:5000], "not a readable CIFAR-10 python batch"),
    ("garbage", lambda: np.random.default_rng(0).bytes(4096), "not a readable CIFAR-10 python batch"),
    ("text", lambda: b"this is not a pickle\n", "not a readable CIFAR-10 python batch"),
    ("not-a-dict", lambda: pickle.dumps([1, 2, 3], protocol=2), "a CIFAR-10 batch is a dict, got list"),
    ("no-data", lambda: pickle.dumps({b"labels": [1]}, protocol=2), "has no 'data' entry"),
    ("no-labels", lambda: pickle.dumps({b"data": _valid_batch()[b"data"]}, protocol=2), "has no 'labels' entry"),
    ("data-row-size", lambda: pickle.dumps({**_valid_batch(), b"data": np.zeros((3, 3000), np.uint8)}),
     r"data must be an \(N, 3072\) integer array .* got shape \(3, 3000\)"),
    ("data-flat", lambda: pickle.dumps({**_valid_batch(), b"data": np.zeros(3 * 3072, np.uint8)}),
     r"data must be an \(N, 3072\) integer array"),
    ("data-float", lambda: pickle.dumps({**_valid_batch(), b"data": np.zeros((3, 3072), np.float32)}),
     "dtype float32"),
    ("data-list", lambda: pickle.dumps({**_valid_batch(), b"data": [0] * 3072}), "dtype list"),
    ("data-range", lambda: pickle.dumps({**_valid_batch(), b"data": np.full((3, 3072), 300, np.int16)}),
     r"outside \[0, 255\]"),
    ("labels-short", lambda: pickle.dumps({**_valid_batch(), b"labels": [1, 2]}), "at least 3 integers"),
    ("labels-text", lambda: pickle.dumps({**_valid_batch(), b"labels": [b"cat"] * 3}), "at least 3 integers"),
    ("labels-range", lambda: pickle.dumps({**_valid_batch(), b"labels": [1, 2, 10]}), r"labels must lie in \[0, 9\]"),
]


@pytest.mark.parametrize(("content", "message"), [case[1:] for case in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_batch_gives_one_clear_error_naming_the_file(tmp_path, content, message):
    path = _write(tmp_path / "test_batch", content())
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: .*{message}"):
        _read_batch(path)


def test_loader_reports_the_bad_file(tmp_path):
    path = _write(tmp_path / "test_batch", b"")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_cifar10_uint8(tmp_path, "test")


# --------------------------------------------------------------------------------------------------------------
# Command line: every bad argument exits 2 with one line naming it, before any model or data is loaded
# --------------------------------------------------------------------------------------------------------------
def _cli_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error  # one line, no traceback
    return error


def _bad_data_root(tmp_path: Path, content: bytes) -> str:
    _write(tmp_path / "test_batch", content)
    return str(tmp_path)


BAD_EVALUATE = [
    ("eps-zero-denominator", ["--eps", "8/0"], "--eps must be a number"),
    ("step-zero-denominator", ["--step-size", "1/0"], "--step-size must be a number"),
    ("eps-infinite", ["--eps", "1e999"], "--eps must be finite"),
    ("eps-negative", ["--eps=-1/255"], r"--eps must lie in \(0, inf\)"),
    ("n-zero", ["--n", "0"], "--n must be an integer in"),
    ("n-negative", ["--n", "-1"], "--n must be an integer in"),
    ("shard-out-of-range", ["--shard", "5/3"], "--shard must be I/N"),
    ("shard-text", ["--shard", "abc"], "--shard must be I/N"),
    ("device-unknown", ["--device", "tpu"], "--device must be cpu or cuda"),
    ("iterations-zero", ["--iterations", "0"], "--iterations must be an integer"),
    ("queries-zero", ["--queries", "0"], "--queries must be an integer"),
    ("unknown-defence", ["--defence", "nope"], "Unknown defence 'nope'"),
    ("unknown-parameter", ["--defence", "resampling:foo=1"], r"Unknown parameter\(s\) \['foo'\]"),
    ("infinite-parameter", ["--defence", "resampling:magnitude=1e999"], r"magnitude \(pixels\) must be finite"),
    ("transfer-without-source", ["--threat", "transfer"], "--threat transfer and --source go together"),
    ("missing-victim", ["--victim", "/no/such/file.th"], "Unknown victim"),
]


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in BAD_EVALUATE], ids=[c[0] for c in BAD_EVALUATE])
def test_bad_evaluate_argument(capsys, argv, message):
    assert re.search(message, _cli_error(capsys, ["evaluate", "--quiet", "--no-cache", *argv]))


def test_bad_output_paths_are_refused_before_the_run(capsys, tmp_path):
    for option in ("--output", "--json", "--plot"):
        assert "is a folder" in _cli_error(capsys, ["evaluate", option, str(tmp_path)])
        missing = str(tmp_path / "nowhere" / "table.png")
        assert "does not exist" in _cli_error(capsys, ["evaluate", option, missing])
    assert "must end in .png" in _cli_error(capsys, ["evaluate", "--plot", str(tmp_path / "figure.jpg")])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_cuda_without_a_gpu(capsys):
    assert "no CUDA device" in _cli_error(capsys, ["evaluate", "--device", "cuda"])


def test_evaluation_device_sets_only_an_indexed_gpu(monkeypatch):
    """torch.cuda.set_device refuses a bare "cuda" (found on a GPU): only torchrun's per-rank device is set."""
    from art_purifiers.cli import _evaluation_device

    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert _evaluation_device(None, world=1) == "cuda" and current == []
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert _evaluation_device("cuda", world=4) == "cuda:1" and current == [torch.device("cuda:1")]
    assert _evaluation_device("cpu", world=4) == "cpu" and len(current) == 1


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"), (b"\x80\x02garbage", "not a readable"), (pickle.dumps({b"labels": [1]}), "no 'data' entry"),
], ids=["empty", "garbage", "no-data"])
def test_bad_batch_under_data_root(capsys, tmp_path, content, message):
    error = _cli_error(capsys, ["evaluate", "--data-root", _bad_data_root(tmp_path, content), "--n", "2"])
    assert "test_batch" in error and message in error


def test_truncated_and_malicious_victim_checkpoints(capsys, tmp_path):
    good = tmp_path / "good.th"
    torch.save({"state_dict": load_victim().network.state_dict()}, good)
    truncated = tmp_path / "truncated.th"
    truncated.write_bytes(good.read_bytes()[:1000])
    assert "not a readable checkpoint" in _cli_error(capsys, ["evaluate", "--victim", str(truncated)])
    malicious = tmp_path / "malicious.th"
    marker = tmp_path / "ran"
    with open(malicious, "wb") as handle:
        pickle.dump(_Payload(os.system, f"touch {marker}"), handle)
    assert "not a readable checkpoint" in _cli_error(capsys, ["evaluate", "--victim", str(malicious)])
    assert not marker.exists()


def test_non_finite_victim_checkpoint(capsys, tmp_path):
    state = load_victim().network.state_dict()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save({"state_dict": state}, tmp_path / "nan.th")
    error = _cli_error(capsys, ["evaluate", "--victim", str(tmp_path / "nan.th")])
    assert "layer2.0.conv1.weight" in error and "NaN" in error


# --------------------------------------------------------------------------------------------------------------
# Weight files: safetensors only, finite, the expected tensors
# --------------------------------------------------------------------------------------------------------------
def test_weight_files_are_validated(tmp_path):
    pickled = tmp_path / "weights.pt"
    pickled.write_bytes(b"not read")
    with pytest.raises(ValueError, match="Only .safetensors"):
        load_weights(pickled)
    header = tmp_path / "corrupt.safetensors"
    header.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_weights(header)
    nan = tmp_path / "nan.safetensors"
    save_safetensors({"w": torch.tensor([1.0, NAN])}, nan, {"method": "irad"})
    with pytest.raises(ValueError, match="'w' holds NaN or infinite values"):
        load_weights(nan, method="irad")
    with pytest.raises(ValueError, match=r"does not fit Linear \(missing: \['bias'\]; wrong shape: \['weight'\]\)"):
        load_into(torch.nn.Linear(3, 2), {"weight": torch.ones(3, 3)}, "test file")


def test_irad_weights_full_of_nan_are_refused(tmp_path):
    tensors = {k: torch.full_like(v, NAN) if v.is_floating_point() else v
               for k, v in load_weights(tiny_irad_weights()).tensors.items()}
    path = tmp_path / "irad_nan.safetensors"
    save_safetensors(tensors, path, read_metadata(tiny_irad_weights()))
    with pytest.raises(ValueError, match="NaN or infinite"):
        IRADPreprocessor(path)


@pytest.mark.parametrize("weights", [None, 3, ""], ids=["none", "int", "empty"])
@pytest.mark.parametrize("cls", [IRADPreprocessor, IDFRPreprocessor, DIRPreprocessor, IDFRDefence])
def test_weights_of_the_wrong_type_name_the_parameter(cls, weights):
    with pytest.raises(ValueError, match=r"^weights must be a registered name \(e\.g\. 'cifar10'\) or the path of a "
                                         r"\.safetensors file, got "):
        cls(weights=weights)
    with pytest.raises(ValueError, match="^weights must be a registered name"):
        IRADPreprocessor(tiny_irad_weights(), device_type="cpu").set_params(weights=weights)


# --------------------------------------------------------------------------------------------------------------
# Files read back: adversarial-example cache entries, progress files, result tables, output files
# --------------------------------------------------------------------------------------------------------------
def _cached_run(tmp_path, caplog=None):
    from conftest import TinyCNN

    from art_purifiers.evaluation import AttackSpec, evaluate

    torch.manual_seed(0)
    victim = TinyCNN().eval()
    rng = np.random.default_rng(0)
    x = np.kron(rng.uniform(0, 1, size=(4, 3, 8, 8)).astype(np.float32), np.ones((1, 1, 4, 4), np.float32))
    with torch.no_grad():
        y = victim(torch.from_numpy(x)).argmax(1).numpy()
    return x, evaluate(victim, {}, x, y, threats=("oblivious",), attack=AttackSpec("pgd", eps=0.25, steps=5),
                              cache_dir=tmp_path)


def test_tampered_cache_entry_is_detected_and_recomputed(tmp_path, caplog):
    """The adversarial examples replaced by the clean images (checksum left as written): the robust accuracy would
    silently equal the clean one; the checksum catches it and the entry is recomputed."""
    x, first = _cached_run(tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    with np.load(entry) as archive:
        saved = dict(archive)
    np.savez_compressed(entry, **{**saved, "x_adv": x})
    with caplog.at_level("WARNING"):
        _, again = _cached_run(tmp_path)
    assert "does not match its checksum" in caplog.text and "recomputing" in caplog.text
    assert again.rows[0].ra == first.rows[0].ra < again.rows[0].sa
    with np.load(entry) as archive:
        assert not np.array_equal(archive["x_adv"], x)


@pytest.mark.parametrize(("change", "message"), [
    (lambda saved: {k: v for k, v in saved.items() if k not in ("key", "sha256")}, "no key and checksum"),
    (lambda saved: {**saved, "key": np.str_("another-key")}, "written for the key another-key"),
    (lambda saved: {**saved, "seconds": np.float64(0.0)}, "does not match its checksum"),
], ids=["old-format", "other-key", "edited-time"])
def test_cache_entry_for_another_key_or_without_checksum_is_recomputed(tmp_path, caplog, change, message):
    _cached_run(tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    with np.load(entry) as archive:
        np.savez_compressed(entry, **change(dict(archive)))
    with caplog.at_level("WARNING"):
        _cached_run(tmp_path)
    assert message in caplog.text and "recomputing" in caplog.text


def test_cache_entry_copied_under_another_name_is_rejected(tmp_path, images, caplog):
    from art_purifiers.evaluation.runner import AdversarialCache

    cache = AdversarialCache(tmp_path)
    cache.put("first", images, 1.0)
    (tmp_path / "first.npz").rename(tmp_path / "second.npz")
    with caplog.at_level("WARNING"):
        assert cache.get("second", images) is None
    assert "written for the key first" in caplog.text


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", None], ids=["empty", "garbage", "truncated"])
def test_unreadable_progress_file_is_one_error_naming_it(tmp_path, content):
    from art_purifiers.evaluation.progress import load_progress, save_progress

    x = np.zeros((2, 3, 4, 4), np.float32)
    path = tmp_path / "attack.partial.npz"
    save_progress(path, x, x)
    path.write_bytes(path.read_bytes()[:100] if content is None else content)
    with pytest.raises(ValueError, match=rf"^Progress file {re.escape(str(path))} is not readable \(.*\); delete "
                                         "it to restart") as error:
        load_progress(path, x)
    assert "\n" not in str(error.value)


def test_truncated_progress_file_under_the_command_line(capsys, tmp_path, monkeypatch):
    """A damaged .partial.npz found by AutoAttack's resume: one line naming it, not a BadZipFile traceback."""
    from art_purifiers.evaluation import autoattack

    def load(path, x):
        path = tmp_path / "key.partial.npz"
        path.write_bytes(b"PK\x03\x04")
        return autoattack.__dict__["_original_load_progress"](path, x)

    monkeypatch.setitem(autoattack.__dict__, "_original_load_progress", autoattack.load_progress)
    monkeypatch.setattr(autoattack, "load_progress", load)
    error = _cli_error(capsys, ["evaluate", "--quiet", "--n", "2", "--defence", "resampling", "--threat", "oblivious",
                                "--attack", "autoattack", "--iterations", "1", "--cache-dir", str(tmp_path / "cache")])
    assert "key.partial.npz is not readable" in error


def _result_json(tmp_path) -> Path:
    from art_purifiers.evaluation import ResultTable
    from art_purifiers.evaluation.report import ResultRow

    table = ResultTable([ResultRow.from_counts("none", "clean", "-", 9, None, 10, 0.0)], {"victim": "v"})
    path = tmp_path / "good.json"
    path.write_text(table.to_json(), encoding="utf-8")
    return path


BAD_TABLES = [
    ("truncated", lambda text: text[: len(text) // 2], "not valid JSON"),
    ("empty", lambda text: "", "not valid JSON"),
    ("no-rows", lambda text: '{"table": []}', "no 'rows' list"),
    ("list", lambda text: "[1, 2]", "no 'rows' list"),
    ("row-fields", lambda text: '{"rows": [{"defence": "none"}]}', "row 0 is not a result row"),
    ("row-not-object", lambda text: '{"rows": [3]}', "row 0 is not a result row"),
    ("meta", lambda text: '{"rows": [], "meta": 3}', "'meta' is not an object"),
]


@pytest.mark.parametrize("command", ["merge", "plot"])
@pytest.mark.parametrize(("change", "message"), [c[1:] for c in BAD_TABLES], ids=[c[0] for c in BAD_TABLES])
def test_bad_result_table_is_one_line_naming_the_file(capsys, tmp_path, command, change, message):
    good = _result_json(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(change(good.read_text(encoding="utf-8")), encoding="utf-8")
    argv = [command, str(good), str(bad)] + (["--output", str(tmp_path / "f.png")] if command == "plot" else [])
    error = _cli_error(capsys, argv)
    assert f"{bad} is not a results JSON" in error and message in error


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("option", ["--output", "--json"])
def test_output_to_a_full_disk_is_one_line(capsys, tmp_path, option):
    error = _cli_error(capsys, ["merge", str(_result_json(tmp_path)), option, "/dev/full"])
    assert f"{option} /dev/full: could not write the file (No space left on device)" in error


# --------------------------------------------------------------------------------------------------------------
# Where users go wrong with the API
# --------------------------------------------------------------------------------------------------------------
def test_dip_without_a_classifier_says_what_to_pass():
    with pytest.raises(ValueError, match=r"^DIPPreprocessor needs the victim whose decisions guide it: "
                                         r"DIPPreprocessor\(classifier=victim\)\. classifier must be"):
        DIPPreprocessor()


def test_model_changing_defence_in_preprocessing_defences_says_to_deploy():
    from conftest import TinyCNN, make_classifier
    from defences_under_contract import tiny_idfr_weights

    from art_purifiers.deploy import DefenceChain, EmbeddingDefence, EOTClassifier

    message = (r"^IDFRDefence changes the model \(it is not an input preprocessor\), so it cannot be one of ART's "
               r"preprocessing_defences\. Deploy it onto the victim instead: classifier = IDFRDefence\(\.\.\.\)"
               r"\.deploy\(victim\)\.classifier\(\)")
    defence = IDFRDefence(tiny_idfr_weights(), device_type="cpu")
    for defences in ([defence], defence, [ResamplingPreprocessor(device_type="cpu"), defence]):
        with pytest.raises(TypeError, match=message):
            make_classifier(TinyCNN(), defences)
    with pytest.raises(TypeError, match="EmbeddingDefence changes the model"):
        make_classifier(TinyCNN(), [EmbeddingDefence(torch.nn.Identity())])
    with pytest.raises(TypeError, match="DefenceChain changes the model"):
        EOTClassifier(TinyCNN(), DefenceChain([EmbeddingDefence(torch.nn.Identity())]))
    # The way that works, and purifiers still pass ART's check.
    assert defence.deploy(TinyCNN()).classifier().predict(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)
    assert make_classifier(TinyCNN(), [IDFRPreprocessor(tiny_idfr_weights(), device_type="cpu")]) is not None


@pytest.mark.parametrize("arguments, message", [
    (["dir", "--checkpoint", "{tmp}/c.pth", "--output", "{tmp}/o.safetensors", "--heads", "0"], "--heads"),
    (["dir", "--checkpoint", "{tmp}/c.pth", "--output", "{tmp}/o.pt"], "must end in .safetensors"),
    (["dir", "--checkpoint", "{tmp}/missing.pth", "--output", "{tmp}/o.safetensors"], "no such file"),
    (["irad", "--reconstruction", "{tmp}/c.pth", "--samplenet", "{tmp}/missing.pt", "--output", "{tmp}/o.safetensors"],
     "no such file"),
    (["irad", "--reconstruction", "{tmp}/c.pth", "--output", "{tmp}/o.safetensors"], "not an IRAD Reconstruction.pt"),
    (["dir", "--checkpoint", "{tmp}/c.pth", "--output", "{tmp}/o.safetensors"], "is not a DIR ViT"),
])
def test_bad_import_weights_arguments(capsys, tmp_path, arguments, message):
    torch.save({"module.conv1.weight": torch.zeros(1)}, tmp_path / "c.pth")
    error = _cli_error(capsys, ["import-weights", *(a.format(tmp=tmp_path) for a in arguments)])
    assert message in error and not (tmp_path / "o.safetensors").exists()
