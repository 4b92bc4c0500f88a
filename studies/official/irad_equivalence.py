"""Does ``IRADPreprocessor(weights=imported)`` compute what the IRAD authors' code computes?

Two phases, each in its own interpreter (the authors' code needs stubs and a CPU patch that must not touch ours):

* ``--phase authors``: build the authors' LIIF (``models.make`` with the encoder named by ``--encoder``: their
  ``edsr-baseline``, ``rdn`` or ``rcan``, no upsampling, MLP 256 x 4) and their ``SampleNetMLP`` with random weights
  (SampleNet's encoder copy gets weights of its own), save them as their code saves them (``Reconstruction.pt``:
  ``{"model": {"name", "args", "sd"}}``; ``SampleNet.pt``: ``{"model": state dict}``), and purify the images with
  their defence wrapper ``SampleFeatureMLP`` (robustbench/model_zoo/defense/sample_feature.py). Their code calls
  ``.cuda()`` on coordinate grids; on a machine without CUDA that call is made the identity, nothing else changes.
* ``--phase ours``: ``art-purifiers import-weights irad`` on both files, then ``IRADPreprocessor(weights=...)``.

Run both with the driver: ``python studies/official/irad_equivalence.py --irad-code CLONE --data-root DIR --n 100
--output report.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

ENCODERS = {"edsr-baseline": {"no_upsampling": True}, "rdn": {"no_upsampling": True},
            "rcan": {"no_upsampling": True}}


def _randomise(module: torch.nn.Module, seed: int, last_scale: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tensors = [(name, tensor) for name, tensor in module.state_dict().items() if tensor.is_floating_point()]
        for _, tensor in tensors:
            fan_in = tensor[0].numel() if tensor.ndim > 1 else 1
            scale = (1.0 / fan_in) ** 0.5 if tensor.ndim > 1 else 0.02
            tensor.copy_(scale * torch.randn(tensor.shape, generator=generator))
        last = [tensor for name, tensor in tensors if name.startswith("imnet.")][-2:]
        for tensor in last:  # keep SampleNet's offsets in a plausible range (a fraction of a pixel to a few)
            tensor.mul_(last_scale)


def _authors_modules(code: Path) -> types.ModuleType:
    """Import the authors' ``models`` package and their defence wrapper from a checkout, without their utils'
    tensorboard dependency (a stub), on the CPU."""
    sys.modules.setdefault("tensorboardX", types.SimpleNamespace(SummaryWriter=None))
    sys.path.insert(0, str(code))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # their coordinate grids call .cuda()
    spec = importlib.util.spec_from_file_location(
        "sample_feature", code / "robustbench" / "model_zoo" / "defense" / "sample_feature.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def authors_phase(args: argparse.Namespace) -> None:
    sample_feature = _authors_modules(Path(args.irad_code).resolve())
    import models  # the authors' package (registers edsr-baseline, rdn, rcan, mlp, liif)
    from models.samplenet import SampleNetMLP

    work = Path(args.work)
    spec = {"name": "liif", "args": {"encoder_spec": {"name": args.encoder, "args": ENCODERS[args.encoder]},
                                     "imnet_spec": {"name": "mlp", "args": {"out_dim": 3,
                                                                            "hidden_list": [256, 256, 256, 256]}}}}
    torch.manual_seed(0)
    liif = models.make(spec)
    _randomise(liif, 1)
    torch.save({"model": {**spec, "sd": liif.state_dict()}}, work / "Reconstruction.pt")
    samplenet = SampleNetMLP(str(work / "Reconstruction.pt"))
    _randomise(samplenet, 2)
    torch.save({"model": samplenet.state_dict()}, work / "SampleNet.pt")
    images = torch.from_numpy(np.load(work / "images.npy"))
    defence = sample_feature.SampleFeatureMLP("cpu", str(work / "SampleNet.pt"), str(work / "Reconstruction.pt"),
                                              height=images.shape[-2], width=images.shape[-1])
    with torch.no_grad():
        purified = torch.cat([defence.forward(images[i:i + 25]) for i in range(0, len(images), 25)])
        offsets = torch.cat([defence.sample_model(images[i:i + 25], defence.coord.repeat(len(images[i:i + 25]), 1, 1),
                                                  defence.cell.repeat(len(images[i:i + 25]), 1, 1))[0]
                             for i in range(0, len(images), 25)])
    np.savez(work / "authors.npz", purified=purified.numpy(), offsets=offsets.numpy())


def ours_phase(args: argparse.Namespace) -> dict:
    from art_purifiers import IRADPreprocessor
    from art_purifiers.weights.importing import import_irad

    work = Path(args.work)
    reference = np.load(work / "authors.npz")
    images = np.load(work / "images.npy")
    imported = import_irad(work / "Reconstruction.pt", work / "irad.safetensors", work / "SampleNet.pt",
                           command="study")
    defence = IRADPreprocessor(weights=str(work / "irad.safetensors"), batch_size=25, device_type="cpu")
    purified, _ = defence(images)
    difference = np.abs(purified - reference["purified"])
    pixels = np.abs(reference["offsets"]) * images.shape[-1] / 2  # their offsets, in pixels
    return {"encoder": args.encoder, "dropped": imported["dropped"],
            "max_abs_difference": float(difference.max()), "mean_abs_difference": float(difference.mean()),
            "authors_change_of_image": float(np.abs(reference["purified"] - images).mean()),
            "authors_shift_pixels": {"mean": float(pixels.mean()), "max": float(pixels.max())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=["authors", "ours"], default=None)
    parser.add_argument("--irad-code", required=True, help="a checkout of the authors' repository (tsingqguo/irad)")
    parser.add_argument("--encoder", nargs="+", default=["edsr-baseline"], choices=sorted(ENCODERS))
    parser.add_argument("--authors-python", default=sys.executable)
    parser.add_argument("--data-root", default=None, help="CIFAR-10 python-layout folder (default: bundled sample)")
    parser.add_argument("--n", type=int, default=100, help="test images 0..n-1")
    parser.add_argument("--work", default=None)
    parser.add_argument("--output", default=None, help="write the report (JSON) here")
    args = parser.parse_args()
    if args.phase is not None:
        args.encoder = args.encoder[0]
        if args.phase == "authors":
            return authors_phase(args)
        print(json.dumps(ours_phase(args), indent=2))
        return None
    from art_purifiers.data import load_test_images

    x, _ = load_test_images(args.data_root, args.n)
    report = {"images": f"test 0..{args.n - 1}", "data_root": args.data_root or "bundled sample",
              "command": " ".join(["python", *sys.argv]), "encoders": {}}
    for encoder in args.encoder:
        with tempfile.TemporaryDirectory() as work:
            np.save(Path(work) / "images.npy", x.astype(np.float32))
            subprocess.run([args.authors_python, __file__, "--irad-code", args.irad_code, "--work", work,
                            "--encoder", encoder, "--phase", "authors"], check=True)
            args.work, args.encoder_name = work, encoder
            report["encoders"][encoder] = ours_phase(argparse.Namespace(work=work, encoder=encoder))
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
