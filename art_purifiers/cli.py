"""Command line: ``art-purifiers evaluate | train | merge | convert-victim | plot``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_CACHE = Path.home() / ".cache" / "art-purifiers" / "adversarial"
# Integer options of `train irad` that override the preset's values.
_PRESET_OVERRIDES = ("stage1-iterations", "stage2-iterations", "stage1-batch", "stage2-batch", "pgd-steps", "seed")


def _evaluate_parser(sub) -> None:
    from art_purifiers.evaluation import ATTACKS, FORMATS, THREATS

    p = sub.add_parser(
        "evaluate",
        help="evaluate defences under threat models and print one table",
        description="Evaluate defences on CIFAR-10 test images. Without arguments: the bundled sample "
        "(test images 0..199), the bundled ResNet-20, the bilinear resampling defence (d=1.5), clean and "
        "oblivious AutoAttack (Linf 8/255). Under torchrun, samples are split across ranks and rank 0 prints "
        "the merged table.",
    )
    p.add_argument("--defence", action="append", metavar="SPEC",
                   help="defence spec NAME[:key=value,...], repeatable (default: resampling)")
    p.add_argument("--weights", default=None, help="weight file passed to the defences as weights=PATH")
    p.add_argument("--victim", default="resnet20",
                   help="'resnet20' (bundled), a CIFAR ResNet checkpoint path, or timm:NAME with --victim-checkpoint")
    p.add_argument("--victim-checkpoint", default=None, help="weights of a timm victim")
    p.add_argument("--victim-mean", type=float, nargs=3, default=None, help="normalisation mean inside the victim")
    p.add_argument("--victim-std", type=float, nargs=3, default=None, help="normalisation std inside the victim")
    p.add_argument("--data-root", default=None, help="CIFAR-10 python-layout folder (default: bundled sample)")
    # --num-images is the spelling to use under torchrun, whose own parser takes --n for one of its options.
    p.add_argument("--n", "--num-images", dest="n", type=int, default=None,
                   help="evaluate images 0..n-1 of the split (default: all available)")
    p.add_argument("--split", default="test", choices=["test", "train"],
                   help="test images (reported figures) or training images (choosing settings; needs --data-root)")
    p.add_argument("--shard", default=None, metavar="I/N", help="evaluate only shard I (0-based) of N; see merge")
    p.add_argument("--threat", nargs="+", default=["clean", "oblivious"], choices=THREATS, help="threat models")
    p.add_argument("--attack", nargs="+", default=["autoattack"], choices=ATTACKS, help="attacks (one row each)")
    p.add_argument("--norm", default="inf", choices=["inf", "2"])
    p.add_argument("--eps", nargs="+", default=["8/255"], help="budgets, e.g. 2/255 4/255 8/255 (one row each)")
    p.add_argument("--steps", type=int, default=100, help="iterations of iterative attacks")
    p.add_argument("--step-size", default=None, help="PGD/BIM/MI-FGSM/C&W step (default eps/4)")
    p.add_argument("--no-random-start", action="store_true", help="PGD and C&W start at the clean image")
    p.add_argument("--eot-draws", type=int, default=8, help="draws averaged by the eot threat model")
    p.add_argument("--queries", type=int, default=1000, help="HopSkipJump queries per image (decision)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="adversarial-example cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--format", default="text", choices=FORMATS)
    p.add_argument("--output", default=None, help="also write the table to this file")
    p.add_argument("--json", default=None, help="also write the table as JSON (input of merge)")
    p.add_argument("--plot", default=None, help="write accuracy against eps to this image (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _shard(text: str | None, rank: int, world: int) -> tuple[int, int]:
    if world > 1:
        return rank, world
    if text is None:
        return 0, 1
    index, _, count = text.partition("/")
    index, count = int(index), int(count)
    if not 0 <= index < count:
        raise ValueError(f"--shard must be I/N with 0 <= I < N, got {text!r}.")
    return index, count


def _emit(table, args) -> None:
    text = table.render(args.format)
    print(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(table.to_json(), encoding="utf-8")
    if args.plot:
        from art_purifiers.evaluation.plots import plot_accuracy_vs_eps

        plot_accuracy_vs_eps(table, args.plot)


def run_evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    import torch.distributed as dist

    from art_purifiers.data import load_cifar10, load_test_images
    from art_purifiers.defences import make_defence
    from art_purifiers.evaluation import AttackSpec, ResultTable, evaluate, parse_eps
    from art_purifiers.evaluation.report import describe_data
    from art_purifiers.models import load_victim

    if args.victim_checkpoint and not str(args.victim).startswith("timm:"):
        raise ValueError("--victim-checkpoint is for timm victims; give a CIFAR ResNet checkpoint as --victim.")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    device_type = "cpu" if device == "cpu" else "gpu"
    overrides = {"device_type": device_type, **({"weights": args.weights} if args.weights else {})}
    victim = load_victim(args.victim, checkpoint=args.victim_checkpoint, mean=args.victim_mean,
                         std=args.victim_std).to(device)
    defences = {spec: make_defence(spec, victim=victim, **overrides) for spec in args.defence or ["resampling"]}
    if args.split == "test":
        x, y = load_test_images(args.data_root, args.n)
    elif args.data_root is None:
        raise ValueError("--split train needs --data-root (the bundled sample holds test images only).")
    else:
        x, y = load_cifar10(args.data_root, "train", None if args.n is None else range(args.n))
    index, count = _shard(args.shard, rank, world)
    part = np.array_split(np.arange(len(x)), count)[index]
    specs = [
        AttackSpec(name=name, norm=args.norm, eps=parse_eps(eps), steps=args.steps,
                   step_size=None if args.step_size is None else parse_eps(args.step_size),
                   random_start=not args.no_random_start)
        for name in args.attack for eps in args.eps
    ]
    table = evaluate(
        victim, defences, x[part], y[part], threats=tuple(args.threat), attack=specs, seed=args.seed,
        batch_size=args.batch_size, device=device, cache_dir=None if args.no_cache else args.cache_dir,
        victim_name=str(args.victim), verbose=not args.quiet and rank == 0, eot_draws=args.eot_draws,
        queries=args.queries,
    )
    source = args.data_root or "bundled sample"
    table.meta.update({"data_source": source, "split": args.split, "images": [int(part[0]), int(part[-1])],
                       "shard": [index, count],
                       "data": describe_data(source, int(part[0]), int(part[-1]), (index, count), args.split),
                       "command": "art-purifiers " + " ".join(sys.argv[1:])})
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, table.to_json())
        dist.destroy_process_group()
        if rank != 0:
            return 0
        table = ResultTable.merge([ResultTable.from_json(text) for text in gathered])
        table.meta["command"] = "torchrun ... art-purifiers " + " ".join(sys.argv[1:])
    _emit(table, args)
    return 0


def _train_parser(sub) -> None:
    from art_purifiers.training.irad import PRESETS, TASKS

    train = sub.add_parser("train", help="build a defence's weights").add_subparsers(dest="method", required=True)
    p = train.add_parser("irad", help="train IRAD: implicit representation (stage 1), then SampleNet (stage 2)")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--task", default=None, choices=TASKS, help="stage-1 task (default: the preset's, adversarial)")
    p.add_argument("--data-root", default=None, help="CIFAR-10 python-layout folder (training images only)")
    p.add_argument("--n-train", type=int, default=None, help="use only the first n training images")
    p.add_argument("--source", default=None, help="source classifier checkpoint (default: reference ResNet-32)")
    p.add_argument("--out", default=None, help="folder for pairs, checkpoints and the log")
    p.add_argument("--export", default=None, help="write the weights (.safetensors) here when done")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    for name in _PRESET_OVERRIDES:
        p.add_argument(f"--{name}", type=int, default=None, help="override the preset")


def run_train(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    import torch

    from art_purifiers.data import find_cifar10_root, load_cifar10
    from art_purifiers.models import load_victim
    from art_purifiers.training.irad import PRESETS, export_weights, train_irad

    root = args.data_root or find_cifar10_root()
    if root is None:
        raise SystemExit("No CIFAR-10 training data: pass --data-root (python-layout folder).")
    source = args.source or Path(root).parent / "weights" / "akamaster_pytorch_resnet_cifar10" / "resnet32-d509ac18.th"
    overrides = {name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name in (*_PRESET_OVERRIDES, "task")}
    config = dataclasses.replace(PRESETS[args.preset], **{k: v for k, v in overrides.items() if v is not None})
    out = Path(args.out or f"runs/irad-{args.preset}-{config.task}")
    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger().addHandler(logging.FileHandler(out / "train.log"))
    logging.getLogger().setLevel(logging.INFO)
    x, y = load_cifar10(root, "train", None if args.n_train is None else range(args.n_train))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    representation, samplenet, report = train_irad(config, x, y, load_victim(source), out, device)
    report["command"] = "art-purifiers " + " ".join(sys.argv[1:])
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    if args.export:
        provenance = {k: report[k] for k in ("command", "machine", "device", "world", "images", "seconds")}
        print(export_weights(representation, samplenet, config, args.export, provenance))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from art_purifiers.evaluation import ResultTable

    tables = [ResultTable.from_json(Path(path).read_text(encoding="utf-8")) for path in args.tables]
    _emit(ResultTable.merge(tables), args)
    return 0


def run_convert_victim(args: argparse.Namespace) -> int:
    from art_purifiers.training.victim import convert_reference_checkpoint

    print(convert_reference_checkpoint(args.source, args.destination))
    return 0


def _plot_parser(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="draw the figures of result tables (JSON of evaluate --json or merge --json)",
        description="Figures of one or more result tables: 'summary' (SA and RA per threat model for every "
        "defence, the worst attack at one L-inf eps), 'eps' (accuracy against eps, one line per defence, threat "
        "model and attack) or 'both' (OUTPUT with _summary and _eps before its suffix). Several tables are "
        "combined row by row, the first holding a (defence, threat, attack) wins.",
    )
    p.add_argument("tables", nargs="+", metavar="RESULTS.json", help="result tables written by evaluate --json")
    p.add_argument("--output", required=True, metavar="FIG", help="figure file: .png, .pdf or .svg")
    p.add_argument("--kind", default="both", choices=["summary", "eps", "both"], help="which figure (default: both)")
    p.add_argument("--defence", action="append", default=None, metavar="NAME",
                   help="only this defence (its spec as in the table; repeatable; default: all)")
    p.add_argument("--eps", default=None, help="L-inf budget of the summary, e.g. 8/255 (default: the largest)")
    p.add_argument("--title", default=None, help="figure title (default: the budget and the victim)")


def run_plot(args: argparse.Namespace) -> int:
    from art_purifiers.evaluation import parse_eps
    from art_purifiers.evaluation.plots import (
        check_figure_path,
        plot_accuracy_vs_eps,
        plot_results_summary,
        read_result_tables,
    )

    output = check_figure_path(args.output)
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"--output: the folder {str(folder)!r} does not exist or is not writable.")
    try:
        eps = None if args.eps is None else 255 * parse_eps(args.eps)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--eps must be a number or a fraction such as 8/255, got {args.eps!r}.") from None
    table = read_result_tables(args.tables)
    if args.kind == "both":
        targets = {kind: output.with_name(f"{output.stem}_{kind}{output.suffix}") for kind in ("summary", "eps")}
    else:
        targets = {args.kind: output}
    if "summary" in targets:
        print(plot_results_summary(table, targets["summary"], eps=eps, title=args.title, defences=args.defence))
    if "eps" in targets:
        print(plot_accuracy_vs_eps(table, targets["eps"], title=args.title, defences=args.defence))
    return 0


def main(argv: list[str] | None = None) -> int:
    from art_purifiers.evaluation import FORMATS

    parser = argparse.ArgumentParser(prog="art-purifiers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _evaluate_parser(sub)
    _train_parser(sub)
    merge = sub.add_parser("merge", help="merge the JSON tables of evaluate --shard runs into one table")
    merge.add_argument("tables", nargs="+", help="JSON files written by evaluate --json")
    merge.add_argument("--format", default="text", choices=FORMATS)
    merge.add_argument("--output", default=None)
    merge.add_argument("--json", default=None)
    merge.add_argument("--plot", default=None)
    convert = sub.add_parser("convert-victim", help="convert a reference CIFAR ResNet .th checkpoint to safetensors")
    convert.add_argument("source")
    convert.add_argument("destination")
    _plot_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", True) else logging.INFO)
    handlers = {"evaluate": run_evaluate, "train": run_train, "merge": run_merge, "convert-victim": run_convert_victim,
                "plot": run_plot}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, IndexError) as error:
        parser.exit(2, f"art-purifiers: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
