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


def _randomise(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                fan_in = tensor[0].numel() if tensor.ndim > 1 else 1
                scale = (1.0 / fan_in) ** 0.5 if tensor.ndim > 1 else 0.02
                tensor.copy_(scale * torch.randn(tensor.shape, generator=generator))


def _rescale_output(mlp: torch.nn.Module, measured: float, wanted: float) -> None:
    """Scale the MLP's last linear layer so that a measured output size becomes the wanted one: random weights give
    offsets of thousands of pixels through some encoders, and colours far outside [0, 1], which the clamp would hide."""
    last = [module for module in mlp.modules() if isinstance(module, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(wanted / measured)
        last.bias.mul_(wanted / measured)


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
    from utils import make_coord

    work = Path(args.work)
    spec = {"name": "liif", "args": {"encoder_spec": {"name": args.encoder, "args": ENCODERS[args.encoder]},
                                     "imnet_spec": {"name": "mlp", "args": {"out_dim": 3,
                                                                            "hidden_list": [256, 256, 256, 256]}}}}
    images = torch.from_numpy(np.load(work / "images.npy"))
    h, w = images.shape[-2:]
    coord = make_coord((h, w)).unsqueeze(0).expand(8, -1, -1)
    cell = torch.ones_like(coord) * torch.tensor([2 / h, 2 / w])
    torch.manual_seed(0)
    liif = models.make(spec).eval()
    _randomise(liif, 1)
    with torch.no_grad():  # colours of spread about 0.25 around mid-grey: most pixels stay inside (0, 1)
        _rescale_output(liif.imnet, float(liif(images[:8] * 2 - 1, coord, cell).std()), 0.5)
    torch.save({"model": {**spec, "sd": liif.state_dict()}}, work / "Reconstruction.pt")
    samplenet = SampleNetMLP(str(work / "Reconstruction.pt")).eval()
    _randomise(samplenet, 2)
    with torch.no_grad():  # offsets of about a pixel on average
        _rescale_output(samplenet.imnet, float(samplenet(images[:8], coord, cell)[0].abs().mean()), 2 / h)
    torch.save({"model": samplenet.state_dict()}, work / "SampleNet.pt")
    defence = sample_feature.SampleFeatureMLP("cpu", str(work / "SampleNet.pt"), str(work / "Reconstruction.pt"),
                                              height=images.shape[-2], width=images.shape[-1])
    with torch.no_grad():
        purified = torch.cat([defence.forward(images[i:i + 25]) for i in range(0, len(images), 25)])
        offsets = torch.cat([defence.sample_model(images[i:i + 25], defence.coord.repeat(len(images[i:i + 25]), 1, 1),
                                                  defence.cell.repeat(len(images[i:i + 25]), 1, 1))[0]
                             for i in range(0, len(images), 25)])
        unclamped = torch.cat([defence.inr_model((images[i:i + 25] - 0.5) / 0.5,
                                                 defence.coord.repeat(len(images[i:i + 25]), 1, 1)
                                                 + offsets[i:i + 25],
                                                 defence.cell.repeat(len(images[i:i + 25]), 1, 1)) * 0.5 + 0.5
                               for i in range(0, len(images), 25)])
    unclamped = unclamped.view(len(images), h, w, 3).permute(0, 3, 1, 2)
    np.savez(work / "authors.npz", purified=purified.numpy(), offsets=offsets.numpy(), unclamped=unclamped.numpy())


def ours_phase(args: argparse.Namespace) -> dict:
    from art_purifiers import IRADPreprocessor
    from art_purifiers.nn.registry import create_network
    from art_purifiers.weights.importing import import_irad

    work = Path(args.work)
    reference = np.load(work / "authors.npz")
    images = np.load(work / "images.npy")
    imported = import_irad(work / "Reconstruction.pt", work / "irad.safetensors", work / "SampleNet.pt",
                           command="study")
    defence = IRADPreprocessor(weights=str(work / "irad.safetensors"), batch_size=25, device_type="cpu")
    purified, _ = defence(images)
    difference = np.abs(purified - reference["purified"])
    with torch.no_grad():  # before the clamp to [0, 1], which would hide differences outside it
        unclamped = defence.purify(torch.from_numpy(images), torch.Generator()).numpy()
    inside = (reference["purified"] > 0) & (reference["purified"] < 1)
    # A control that must fail: the same weights with shifts read in pixels (our trainer's unit).
    spec = defence.samplenet.network_spec
    control = create_network({**spec, "args": {**spec["args"], "units": "pixels"}}).eval()
    control.load_state_dict(defence.samplenet.state_dict())
    x = torch.from_numpy(images[:25])
    with torch.no_grad():
        codes = defence.representation.encode(x)
        shifted = defence.representation.render(codes, 32, 32, control(codes, 32, 32, images=x)).clamp(0, 1)
    pixels = np.abs(reference["offsets"]) * images.shape[-1] / 2  # their offsets, in pixels
    return {"encoder": args.encoder, "dropped": imported["dropped"],
            "max_abs_difference": float(difference.max()), "mean_abs_difference": float(difference.mean()),
            "max_abs_difference_before_clamp": float(np.abs(unclamped - reference["unclamped"]).max()),
            "share_of_pixels_inside_0_1": float(inside.mean()),
            "control_shifts_in_pixels_max_abs_difference": float(np.abs(shifted.numpy()
                                                                         - reference["purified"][:25]).max()),
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
