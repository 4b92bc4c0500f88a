"""Does ``DIRPreprocessor(weights=imported)`` compute what the DIR authors' code computes?

Two phases, each in its own interpreter, because the authors pin timm 0.6 (LayerNorm eps 1e-5 in its transformer
blocks) while the package runs on timm 1.x:

* ``--phase authors`` (run it with an interpreter that has timm 0.6.x and einops): build the authors' ``DIR_ViT``
  from their ``pretrain_model.py`` with random weights, save it both ways their code saves models (a whole pickled
  module, like ``model/pre_model.pt``, and a DataParallel state dict, like ``model/pre_trained.pth``), draw each
  image's token order with their ``random_indexes``, and record their outputs for both stages' value ranges
  (pre-training: images mapped to ``[-1, 1]``; adversarial stage: ``[0, 1]`` images, unscaled output).
* ``--phase ours`` (the package's interpreter): import both files with ``art-purifiers import-weights dir`` and
  compare our masked ViT's output, given the same token orders, with theirs.

Run both with the driver (no phase): ``python studies/official/dir_equivalence.py --dir-code CLONE
--authors-python PYTHON --data-root DIR --n 100 --output report.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random values in every tensor, so that no path of the network is left at an initial constant."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                base = 1.0 if name.endswith("norm1.weight") or name.endswith("norm2.weight") else 0.0
                # conv1 sums 256 tokens x 16 values: a small scale keeps the output near the image's range.
                scale = 0.2 if "patchify" in name else 0.015 if "conv1" in name else 0.05
                tensor.copy_(base + scale * torch.randn(tensor.shape, generator=generator))


def authors_phase(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(args.dir_code).resolve()))
    import pretrain_model  # the authors' file

    work = Path(args.work)
    torch.manual_seed(0)
    model = pretrain_model.DIR_ViT().eval()
    _randomise(model, 1)
    torch.save(model, work / "pre_model.pt")
    torch.save(torch.nn.DataParallel(model).state_dict(), work / "pre_trained.pth")
    images = torch.from_numpy(np.load(work / "images.npy"))
    tokens = model.encoder.pos_embedding.shape[0]
    outputs, orders = {"symmetric": [], "unit": []}, []
    for start in range(0, len(images), 50):
        x = images[start:start + 50]
        np.random.seed(1000 + start)  # noqa: NPY002  (their PatchShuffle draws from numpy's global state)
        drawn = [pretrain_model.random_indexes(tokens)[0] for _ in range(len(x))]
        orders.append(np.stack(drawn))
        with torch.no_grad():
            np.random.seed(1000 + start)  # noqa: NPY002  (their PatchShuffle draws from numpy's global state)
            outputs["symmetric"].append((model(x * 2 - 1) + 1) / 2)
            np.random.seed(1000 + start)  # noqa: NPY002  (their PatchShuffle draws from numpy's global state)
            outputs["unit"].append(model(x))
    np.savez(work / "authors.npz", order=np.concatenate(orders),
             **{key: torch.cat(value).numpy() for key, value in outputs.items()})
    import timm
    (work / "authors.json").write_text(json.dumps({"timm": timm.__version__, "torch": torch.__version__}))


def ours_phase(args: argparse.Namespace) -> dict:
    from art_purifiers.defences.dir import load_dir_network
    from art_purifiers.nn.masked_vit import complementary_masks
    from art_purifiers.nn.registry import create_network
    from art_purifiers.weights.importing import import_dir

    work = Path(args.work)
    reference = np.load(work / "authors.npz")
    images = torch.from_numpy(np.load(work / "images.npy"))
    order = torch.from_numpy(reference["order"]).long()
    report = {"authors": json.loads((work / "authors.json").read_text())}
    for source, stage in (("pre_model.pt", "symmetric"), ("pre_trained.pth", "unit")):
        imported = import_dir(work / source, work / f"{stage}.safetensors", command="study")
        network, metadata = load_dir_network(work / f"{stage}.safetensors")
        views = complementary_masks(len(images), network.tokens, 2, 0.5, order=order)
        with torch.no_grad():
            ours = torch.cat([network(images[i:i + 50], views[i:i + 50], order[i:i + 50])
                              for i in range(0, len(images), 50)]).numpy()
        difference = np.abs(ours - reference[stage])
        # A control that must fail: the same weights decoded with every view at its own positions (ours).
        control = create_network({**network.network_spec, "args": {**network.network_spec["args"],
                                                                    "view_placement": "own"}})
        control.load_state_dict(network.state_dict())
        with torch.no_grad():
            own = control(images[:50], views[:50])
        report[source] = {"value_range": metadata["networks"]["denoiser"]["args"]["value_range"],
                          "kind": metadata["import"]["kind"], "mapped": imported["mapped"],
                          "dropped": imported["dropped"], "max_abs_difference": float(difference.max()),
                          "mean_abs_difference": float(difference.mean()),
                          "control_own_placement_max_abs_difference": float(np.abs(own.numpy() -
                                                                                  reference[stage][:50]).max()),
                          "output_range": [float(reference[stage].min()), float(reference[stage].max())]}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=["authors", "ours"], default=None)
    parser.add_argument("--dir-code", required=True, help="a checkout of the authors' repository (chenyyyykun/DIR)")
    parser.add_argument("--authors-python", default=sys.executable, help="interpreter with timm 0.6.x and einops")
    parser.add_argument("--data-root", default=None, help="CIFAR-10 python-layout folder (default: bundled sample)")
    parser.add_argument("--n", type=int, default=100, help="test images 0..n-1")
    parser.add_argument("--work", default=None)
    parser.add_argument("--output", default=None, help="write the report (JSON) here")
    args = parser.parse_args()
    if args.phase == "authors":
        return authors_phase(args)
    if args.phase == "ours":
        print(json.dumps(ours_phase(args), indent=2))
        return None
    from art_purifiers.data import load_test_images

    with tempfile.TemporaryDirectory() as work:
        x, _ = load_test_images(args.data_root, args.n)
        np.save(Path(work) / "images.npy", x.astype(np.float32))
        common = [__file__, "--dir-code", args.dir_code, "--work", work]
        subprocess.run([args.authors_python, *common, "--phase", "authors"], check=True)
        args.work = work
        report = ours_phase(args)
    report.update(images=f"test 0..{args.n - 1}", data_root=args.data_root or "bundled sample",
                  command=" ".join(["python", *sys.argv]))
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
