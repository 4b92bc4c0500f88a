"""Command line: art-purifiers evaluate | run | defences | train | merge | convert-victim | import-weights | plot."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

DEFAULT_CACHE = Path.home() / ".cache" / "art-purifiers" / "adversarial"
#: What ``art-purifiers evaluate`` runs when no defence, threat model or attack is named: the package's point in
#: about a minute on 2 CPU cores (docs/results.md has the timing).
MAIN_JOB = {"defence": ["irad", "resampling"], "threat": ["clean", "oblivious", "adaptive"], "attack": ["pgd"],
            "iterations": 20, "step_size": "2/255", "n": 100}
#: Defaults of the options that the main job sets, for any other evaluation.
DEFAULTS = {"defence": ["resampling"], "threat": ["clean", "oblivious"], "attack": ["autoattack"], "iterations": 100}


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default (unless its text already states one, or it is a switch or unset)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, argparse.SUPPRESS) or isinstance(action, argparse._HelpAction)
                or not action.option_strings):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        return f"{text} (default: {shown})"


class DeprecatedAlias(argparse.Action):
    """A former spelling of an option (``--steps`` for ``--iterations``): stores the value under the option's
    ``dest`` and notes the spelling, so :func:`main` can warn once logging is configured."""

    def __init__(self, option_strings, dest, current: str, **kwargs) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.current = current

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.deprecated = [*getattr(namespace, "deprecated", []), (option_string, self.current)]


def _evaluate_parser(sub) -> None:
    from art_purifiers.evaluation.names import ATTACKS, FORMATS, PROTOCOLS, THREATS
    from art_purifiers.methods import defence_names

    p = sub.add_parser(
        "evaluate", formatter_class=HelpFormatter,
        help="evaluate defences under threat models and print one table",
        description="Evaluate defences on CIFAR-10 test images. Without a defence, threat model or attack: the main "
        "job, the shipped IRAD beside bilinear resampling (d=1.5) under clean, oblivious and adaptive "
        "(exact-gradient) PGD-20, Linf 8/255, on bundled test images 0..99 with the bundled ResNet-20, in about a "
        "minute on 2 CPU cores. Under torchrun, samples are split across ranks and rank 0 prints the merged table.",
    )
    p.add_argument("--defence", action="append", metavar="SPEC",
                   help="defence spec NAME[:key=value,...] or art:CLASS[:key=value,...], repeatable; NAME is one of "
                   f"{', '.join(defence_names())} ('art-purifiers defences' lists their parameters) "
                   "(default: resampling; main job: irad and resampling)")
    p.add_argument("--weights", default=None, help="weight file passed to the defences as weights=PATH")
    p.add_argument("--victim", default="resnet20",
                   help="'resnet20', 'resnet32' or 'resnet20-at' (bundled), a victim .safetensors file (see "
                   "convert-victim), a published checkpoint of a CIFAR ResNet, DIR's ResNet-18 or RobustBench's "
                   "WideResNet (.th/.pt/.pth), or timm:NAME with --victim-checkpoint")
    p.add_argument("--victim-checkpoint", default=None, help="weights of a timm victim")
    p.add_argument("--source", default=None,
                   help="classifier the transfer threat model crafts on (same forms as --victim, e.g. resnet32)")
    p.add_argument("--victim-mean", type=float, nargs=3, default=None, help="normalisation mean inside the victim")
    p.add_argument("--victim-std", type=float, nargs=3, default=None, help="normalisation std inside the victim")
    p.add_argument("--data-root", default=None, help="CIFAR-10 python-layout folder (default: bundled sample)")
    # --num-images is the spelling to use under torchrun, whose own parser takes --n for one of its options.
    p.add_argument("--n", "--num-images", dest="n", type=int, default=None,
                   help="evaluate images 0..n-1 of the split (default: all available; main job: 100)")
    p.add_argument("--split", default="test", choices=["test", "train"],
                   help="test images (reported figures) or training images (choosing settings; needs --data-root)")
    p.add_argument("--shard", default=None, metavar="I/N", help="evaluate only shard I (0-based) of N; see merge")
    p.add_argument("--threat", nargs="+", default=None, choices=THREATS,
                   help="threat models (default: clean oblivious; main job: clean oblivious adaptive)")
    p.add_argument("--attack", nargs="+", default=None, choices=ATTACKS,
                   help="attacks, one row each (default: autoattack; main job: pgd)")
    p.add_argument("--norm", default="inf", choices=["inf", "2"], help="norm of the perturbation budget (L-inf or L2)")
    p.add_argument("--eps", nargs="+", default=["8/255"],
                   help="budgets on the [0, 1] pixel scale, e.g. 2/255 4/255 8/255 (one row each); under L-inf a "
                   "value above 1 without '/' is refused (8 is almost surely 8/255)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations of iterative attacks (default: 100; main job: 20)")
    p.add_argument("--steps", dest="iterations", type=int, action=DeprecatedAlias, current="--iterations")
    p.add_argument("--step-size", default=None, help="PGD/BIM/MI-FGSM/C&W step (default eps/4; main job: 2/255)")
    p.add_argument("--no-random-start", action="store_true", help="PGD and C&W start at the clean image")
    p.add_argument("--eot-draws", type=int, default=8, help="draws averaged by the eot threat model")
    p.add_argument("--queries", type=int, default=1000, help="HopSkipJump queries per image (decision, and "
                   "--attack hopskipjump)")
    p.add_argument("--protocol", nargs="+", default=["single"], choices=PROTOCOLS,
                   help="test-time protocols of random defences, rows beside the single draw: majority (vote of "
                   "--protocol-draws draws, a tie is wrong), worst (robust only if every draw is correct)")
    p.add_argument("--protocol-draws", type=int, default=16, help="draws N of the majority and worst protocols")
    p.add_argument("--draws-per-forward", type=int, default=None,
                   help="draws batched into one forward, for EOT and the protocols (default: all; lower it when "
                   "draws x batch images do not fit in memory)")
    p.add_argument("--deployment-seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="deploy every random defence with each seed (rows NAME:seed=S; the attacks run once)")
    p.add_argument("--seed", type=int, default=0, help="seed of numpy and torch before every attack")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch of the attacks and predictions")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--deterministic", action="store_true",
                   help="reproducible CUDA runs, slower (deterministic algorithms; docs: Defences and deployment)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="adversarial-example cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--format", default="text", choices=FORMATS, help="table format printed and written to --output")
    p.add_argument("--output", default=None, help="also write the table to this file")
    p.add_argument("--json", default=None, help="also write the table as JSON (input of merge)")
    p.add_argument("--plot", default=None, help="write accuracy against eps to this image (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no informational log lines")
    p.add_argument("--verbose", action="store_true",
                   help="also show the informational logs of ART and other libraries (hidden by default)")


def _budget(name: str, text: str, norm: str) -> float:
    """A budget or step (``8/255`` or ``0.03``), checked as experiment files check theirs."""
    from art_purifiers.evaluation.experiments import parse_budget

    return parse_budget(name, text, norm)


def _check_plotting(option: str, path: str | None) -> None:
    """Refuse ``option`` before any work when matplotlib, which draws the figure, is not installed."""
    import importlib.util

    if path is not None and importlib.util.find_spec("matplotlib") is None:
        raise ValueError(f"{option} needs matplotlib, which is not installed: pip install matplotlib "
                         "(or pip install 'art-purifiers[plots]').")


def _shard(text: str | None, rank: int, world: int) -> tuple[int, int]:
    if world > 1:
        return rank, world
    if text is None:
        return 0, 1
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"--shard must be I/N with integers 0 <= I < N, got {text!r}.")
    index, count = int(index), int(count)
    if not 0 <= index < count:
        raise ValueError(f"--shard must be I/N with 0 <= I < N, got {text!r}.")
    return index, count


def _writable(option: str, path: str | None, may_create: bool = False) -> None:
    """Refuse, before any work, an output path that is a folder or whose folder is missing or read-only
    (``may_create``: a missing folder is fine when its nearest existing parent is writable)."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name.")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir() and not may_create:
        raise ValueError(f"{option} {path}: the folder {folder} does not exist.")
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f"{option} {path} is not writable.")


def _apply_main_job(args: argparse.Namespace) -> None:
    """Fill the options left unset: the main job's when no defence, threat model or attack is named."""
    main_job = args.defence is None and args.threat is None and args.attack is None
    args.main_job = main_job
    settings = MAIN_JOB if main_job else DEFAULTS
    for key in ("defence", "threat", "attack", "iterations"):
        if getattr(args, key) is None:
            setattr(args, key, settings[key])
    if main_job:
        args.step_size = args.step_size or MAIN_JOB["step_size"]
        args.n = MAIN_JOB["n"] if args.n is None and args.data_root is None else args.n


def _check_evaluate_args(args: argparse.Namespace) -> None:
    """Every argument checked before anything is loaded: one clear error for the first bad one."""
    from art_purifiers.checks import check_integer

    _apply_main_job(args)
    args.eps_values = [_budget("--eps", text, args.norm) for text in args.eps]
    args.step_size_value = None if args.step_size is None else _budget("--step-size", args.step_size, args.norm)
    for option, minimum in (("n", 1), ("iterations", 1), ("eot_draws", 1), ("queries", 1), ("batch_size", 1),
                            ("seed", 0), ("protocol_draws", 2), ("draws_per_forward", 1)):
        if getattr(args, option) is not None:
            check_integer(f"--{option.replace('_', '-')}", getattr(args, option), minimum=minimum)
    for seed in args.deployment_seeds or []:
        check_integer("--deployment-seeds", seed, minimum=0, maximum=2**63 - 1)
    if args.deployment_seeds is not None and len(set(args.deployment_seeds)) != len(args.deployment_seeds):
        raise ValueError(f"--deployment-seeds must be distinct, got {args.deployment_seeds}.")
    _shard(args.shard, 0, 1)
    for option in ("output", "json", "plot"):
        _writable(f"--{option}", getattr(args, option))
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"--plot {args.plot}: the file name must end in .png, .pdf or .svg.")
    _check_plotting("--plot", args.plot)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise ValueError(f"--data-root {args.data_root} is not a folder.")
    if args.victim_checkpoint and not str(args.victim).startswith("timm:"):
        raise ValueError("--victim-checkpoint is for timm victims; give a CIFAR ResNet checkpoint as --victim.")
    if ("transfer" in args.threat) != (args.source is not None):
        raise ValueError("--threat transfer and --source go together: transfer crafts its examples on --source.")
    if args.split == "train" and args.data_root is None:
        raise ValueError("--split train needs --data-root (the bundled sample holds test images only).")
    for spec in args.defence:
        _check_defence_spec(spec)
    _check_device(args.device)


def _check_defence_spec(spec: str) -> None:
    """Against the method registry and the adapter's source, which need neither torch nor ART."""
    from art_purifiers.specs import check_spec

    check_spec(spec)


def _check_device(device: str | None) -> None:
    if device is None:
        return
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}.")
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here; use --device cpu.")
    from art_purifiers.devices import resolve_device

    resolve_device(device, "--device")  # a malformed index, or one beyond the GPUs torch sees


def _evaluation_device(requested: str | None, world: int) -> str:
    """This rank's device: the one asked for (default: CUDA when available); under torchrun, the rank's own GPU,
    made current, since ART's classifiers place their models on the current CUDA device."""
    import torch

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    if device.startswith("cuda:"):  # set_device refuses a device without an index
        torch.cuda.set_device(torch.device(device))
    return device


def _emit(table, args) -> None:
    text = table.render(args.format)
    reading = table.reading() if args.format in ("text", "markdown") else None
    print(text if reading is None else f"{text}\n{reading}")
    if args.output:
        _write_file("--output", args.output, text)
    if args.json:
        _write_file("--json", args.json, table.to_json())
    if args.plot:
        from art_purifiers.evaluation.plots import plot_accuracy_vs_eps

        plot_accuracy_vs_eps(table, args.plot)


def _write_file(option: str, path: str, text: str) -> None:
    """Write ``text`` to ``path``; a failure (disk full, ``/dev/full``, permissions) is one line naming the file."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{option} {path}: could not write the file ({error.strerror or error}).") from None


def _load_images(args: argparse.Namespace):
    from art_purifiers.data import load_cifar10, load_test_images

    try:
        if args.split == "test":
            return load_test_images(args.data_root, args.n)
        return load_cifar10(args.data_root, "train", None if args.n is None else range(args.n))
    except IndexError as error:  # more images asked for than the data root holds
        raise ValueError(f"--n {args.n}: {error}") from error


def _evaluation_settings(args: argparse.Namespace, first: int, shard: tuple[int, int], device: str, verbose: bool):
    """The evaluation's axes from the checked arguments (threat names are presets, in their usual order)."""
    from art_purifiers.evaluation import AttackSpec, DataSlice, EvaluationSettings
    from art_purifiers.evaluation.names import THREATS

    specs = [AttackSpec(name=name, norm=args.norm, eps=eps, steps=args.iterations, step_size=args.step_size_value,
                        random_start=not args.no_random_start, queries=args.queries)
             for name in args.attack for eps in args.eps_values]
    return EvaluationSettings(
        threats=tuple(name for name in THREATS if name in args.threat), attacks=tuple(specs),
        eot_draws=args.eot_draws, queries=args.queries, protocols=tuple(args.protocol),
        protocol_draws=args.protocol_draws, draws_per_forward=args.draws_per_forward,
        deployment_seeds=None if args.deployment_seeds is None else tuple(args.deployment_seeds), seed=args.seed,
        batch_size=args.batch_size, device=device, cache_dir=None if args.no_cache else args.cache_dir,
        verbose=verbose, victim_name=str(args.victim), source_name=str(args.source),
        data=DataSlice(args.data_root or "bundled sample", args.split, first, shard))


def run_evaluate(args: argparse.Namespace) -> int:
    _check_evaluate_args(args)
    import numpy as np
    import torch.distributed as dist

    from art_purifiers.defences import make_defence
    from art_purifiers.devices import deterministic
    from art_purifiers.evaluation import ResultTable, evaluate
    from art_purifiers.models import load_victim

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = _evaluation_device(args.device, world)
    if world > 1:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    # verbose reaches only the defences that take it (DIP's per-image fits show a progress bar).
    overrides = {"device_type": "cpu" if device == "cpu" else "gpu", "verbose": not args.quiet and rank == 0,
                 **({"weights": args.weights} if args.weights else {})}
    victim = load_victim(args.victim, checkpoint=args.victim_checkpoint, mean=args.victim_mean,
                         std=args.victim_std).to(device)
    defences = {spec: make_defence(spec, victim=victim, **overrides) for spec in args.defence}
    x, y = _load_images(args)
    index, count = _shard(args.shard, rank, world)
    part = np.array_split(np.arange(len(x)), count)[index]
    if len(part) == 0:
        raise ValueError(f"Shard {index}/{count} of {len(x)} images is empty; use fewer shards.")
    settings = _evaluation_settings(args, int(part[0]), (index, count), device, not args.quiet and rank == 0)
    with deterministic() if args.deterministic else contextlib.nullcontext():
        table = evaluate(victim, defences, x[part], y[part], settings,
                         source=None if args.source is None else load_victim(args.source).to(device))
    table.meta["command"] = "art-purifiers " + " ".join(sys.argv[1:])
    if args.main_job:
        table.meta["main_job"] = ("no defence, threat model or attack named: IRAD and resampling under clean, "
                                  "oblivious and adaptive PGD-20 (step 2/255); name any of them for other runs")
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


def _train_parser(sub, full: bool) -> None:
    """The train command; its per-method options only when ``full`` (they import the trainers, hence torch)."""
    if not full:
        from art_purifiers.methods import trainer_names

        sub.add_parser("train", help=f"build a method's weights ({', '.join(trainer_names())}; art-purifiers train "
                       "--help lists their presets)")
        return
    from art_purifiers.training import TRAINERS
    from art_purifiers.training.registry import configurable_fields

    listing = "; ".join(f"{t.method} (presets: {', '.join(t.presets)})" for t in TRAINERS.values())
    train = sub.add_parser("train", help="build a defence's weights", description=f"Methods: {listing}.")
    methods = train.add_subparsers(dest="method", required=True, metavar="METHOD")
    for trainer in TRAINERS.values():
        presets = ", ".join(trainer.presets)
        p = methods.add_parser(trainer.method, help=f"{trainer.summary} (presets: {presets})",
                               description=f"{trainer.summary}. Presets: {presets}.", formatter_class=HelpFormatter)
        p.add_argument("--preset", default=trainer.default_preset, choices=[*trainer.presets, *trainer.renamed_presets],
                       metavar="{" + ",".join(trainer.presets) + "}", help="the settings to start from")
        p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                       help="change a setting of the preset (repeatable), e.g. --set stage1_iterations=100")
        p.add_argument("--data-root", default=None,
                       help="CIFAR-10 python-layout folder (default: $ART_PURIFIERS_CIFAR10, else the user cache)")
        p.add_argument("--n-train", type=int, default=None, help="use only the first n training images")
        p.add_argument("--out", default=None, help="folder for caches, checkpoints, the log and report.json")
        p.add_argument("--export", default=None, help="write the weights (.safetensors) here when done")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        for name, (default, text) in trainer.options.items():
            p.add_argument(f"--{name}", default=default, help=f"{text} (default: {default})")
        defaults = trainer.presets[trainer.default_preset]
        for name, value in configurable_fields(defaults).items():
            if isinstance(value, (bool, int, float, str)):
                p.add_argument(f"--{name.replace('_', '-')}", dest=f"field_{name}", default=None, metavar="V",
                               help=f"same as --set {name}=V ({trainer.default_preset}: {value})")


def run_train(args: argparse.Namespace) -> int:
    import json

    from art_purifiers.checks import check_integer
    from art_purifiers.data import load_cifar10, resolve_cifar10_root
    from art_purifiers.training import TRAINERS, TrainingJob, apply_overrides
    from art_purifiers.training.framework import run_device

    trainer = TRAINERS[args.method]
    fields = [f"{key.removeprefix('field_')}={value}" for key, value in vars(args).items()
              if key.startswith("field_") and value is not None]
    if args.n_train is not None:
        fields.append(f"images={check_integer('--n-train', args.n_train, minimum=1)}")
    args.preset = trainer.preset_name(args.preset)
    config = apply_overrides(trainer.presets[args.preset], [*fields, *args.assignments])
    _check_device(args.device)
    run_device(args.device, getattr(config, "precision", "fp32"))  # e.g. tf32 on the CPU, refused before loading
    _writable("--export", args.export, may_create=True)
    root = resolve_cifar10_root(args.data_root)
    images = getattr(config, "images", None)
    x, y = load_cifar10(root, "train", None if images is None else range(images))
    job = TrainingJob(x, y, Path(args.out or f"runs/{args.method}-{args.preset}"), args.device,
                      None if args.export is None else Path(args.export), "art-purifiers " + " ".join(sys.argv[1:]),
                      {name: getattr(args, name.replace("-", "_")) for name in trainer.options})
    report = trainer.run(config, job)
    (job.out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("seconds", "sha256") if k in report}))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from art_purifiers.evaluation import ResultTable

    for option in ("output", "json", "plot"):
        _writable(f"--{option}", getattr(args, option))
    _check_plotting("--plot", args.plot)
    tables = [ResultTable.read(path) for path in args.tables]
    merged = ResultTable.merge(tables)
    _emit(merged.over_seeds() if args.over_seeds else merged, args)
    return 0


def run_convert_victim(args: argparse.Namespace) -> int:
    from art_purifiers.training.victim import convert_reference_checkpoint

    print(convert_reference_checkpoint(args.source, args.destination))
    return 0


def _import_parser(sub) -> None:
    p = sub.add_parser(
        "import-weights",
        help="import the authors' published IRAD or DIR checkpoints into a weight file of ours",
        description="Read the authors' checkpoint files without running code from them (state dicts with "
        "weights_only=True; a whole pickled module through an allowlist unpickler), map every key to ours (or drop "
        "it by a stated rule), and write a .safetensors file that IRADPreprocessor(weights=PATH) or "
        "DIRPreprocessor(weights=PATH) loads and --defence irad:weights=PATH evaluates. Its metadata holds the "
        "networks, the source files' sha256 and the key map. See docs/official.md.",
    )
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    irad = methods.add_parser("irad", help="Reconstruction.pt (+ SampleNet.pt) of tsingqguo/irad",
                              description="IRAD (Cao et al., ICLR 2024): the LIIF reconstruction network and "
                              "SampleNet, computed as the authors' code computes them.")
    irad.add_argument("--reconstruction", required=True, metavar="R.pt",
                      help="Reconstruction.pt: {'model': {'name': 'liif', 'args': ..., 'sd': state dict}}")
    irad.add_argument("--samplenet", default=None, metavar="S.pt",
                      help="SampleNet.pt: {'model': state dict} (default: none; the file then holds the "
                      "reconstruction only, for sampler=none or a naive sampler)")
    dir_ = methods.add_parser("dir", help="model/pre_model.pt or model/pre_trained.pth of chenyyyykun/DIR",
                              description="DIR (Zhou et al., ICML 2023): the masked ViT, computed as the authors' "
                              "code computes it (token-mixing output convolution, second view decoded at the first "
                              "view's positions).")
    dir_.add_argument("--checkpoint", required=True, metavar="FILE",
                      help="a whole pickled module (pre_model.pt) or a DataParallel state dict (pre_trained.pth)")
    dir_.add_argument("--heads", type=int, default=3, help="attention heads (not stored in the file; default: 3, "
                      "the authors')")
    dir_.add_argument("--value-range", default="auto", choices=["auto", "symmetric", "unit"],
                      help="auto: a whole module was pre-trained on [-1, 1] images (symmetric), a state dict comes "
                      "from the adversarial stage on [0, 1] images with unscaled output (unit) (default: auto)")
    for parser in (irad, dir_):
        parser.add_argument("--output", required=True, metavar="OUT.safetensors", help="the weight file to write")


def run_import_weights(args: argparse.Namespace) -> int:
    import json

    from art_purifiers.checks import check_integer

    if not str(args.output).endswith(".safetensors"):
        raise ValueError(f"--output {args.output}: the file name must end in .safetensors.")
    _writable("--output", args.output, may_create=True)
    sources = [args.reconstruction, args.samplenet] if args.method == "irad" else [args.checkpoint]
    for source in filter(None, sources):
        if not Path(source).is_file():
            raise ValueError(f"{source}: no such file.")
    from art_purifiers.weights.importing import import_dir, import_irad

    command = "art-purifiers " + " ".join(sys.argv[1:])
    if args.method == "irad":
        report = import_irad(args.reconstruction, args.output, args.samplenet, command=command)
    else:
        heads = check_integer("--heads", args.heads, minimum=1)
        report = import_dir(args.checkpoint, args.output, heads, args.value_range, command=command)
    print(json.dumps(report, indent=2))
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
    from art_purifiers.evaluation.plots import (
        check_figure_path,
        plot_accuracy_vs_eps,
        plot_results_summary,
        read_result_tables,
    )

    output = check_figure_path(args.output)
    _writable("--output", args.output)
    _check_plotting("plot", args.output)
    eps = None if args.eps is None else 255 * _budget("--eps", args.eps, "inf")
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


def _run_parser(sub) -> None:
    p = sub.add_parser(
        "run", formatter_class=HelpFormatter,
        help="run an experiment file (experiments/NAME.toml): its shards, resumed, merged into one table",
        description="Run the results table declared in an experiment file (format: docs/experiments.md). Its shards "
        "run through the executor (local: this process or a pool of local processes; slurm: one Slurm job array "
        "through submitit); a shard whose table is already in OUT/shards/NAME/ for the same declaration is not run "
        "again (and the adversarial-example cache resumes the attacks of an interrupted one). When every shard is "
        "there, they are merged into OUT/NAME.json and OUT/NAME.md with their provenance.",
    )
    p.add_argument("experiment", metavar="EXPERIMENT.toml", help="the experiment file")
    p.add_argument("--executor", default="local", choices=["local", "slurm"], help="where the shards run")
    p.add_argument("--data-root", default=None,
                   help="CIFAR-10 python-layout folder for experiments on CIFAR-10 (default: $ART_PURIFIERS_CIFAR10)")
    p.add_argument("--out", default="runs/experiments", help="folder of the table and its shards")
    p.add_argument("--shards", nargs="+", type=int, default=None, metavar="I",
                   help="run only these shard indices (0-based); the table is merged once all are there (default: all)")
    p.add_argument("--workers", type=int, default=1, help="local executor: shards run at once, each in a process")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="adversarial-example cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--slurm-folder", default=None, help="slurm: submitit's scripts and logs (default: OUT/slurm/NAME)")
    p.add_argument("--slurm-partition", default=None, help="slurm: partition (default: the cluster's)")
    p.add_argument("--slurm-gpus-per-node", type=int, default=0, help="slurm: GPUs of each shard's job")
    p.add_argument("--slurm-cpus-per-task", type=int, default=1, help="slurm: CPU cores of each shard's job")
    p.add_argument("--slurm-timeout-min", type=int, default=60, help="slurm: time limit of each shard's job, minutes")
    p.add_argument("--slurm-array-parallelism", type=int, default=16, help="slurm: shards running at once")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no informational log lines")
    p.add_argument("--verbose", action="store_true", help="also show the informational logs of other libraries")


def run_experiment_file(args: argparse.Namespace) -> int:
    from art_purifiers.checks import check_integer
    from art_purifiers.evaluation.experiments import (
        LocalExecutor,
        cluster_executor,
        load_experiment,
        run_experiment,
        summary,
    )

    experiment = load_experiment(args.experiment)
    for option in ("workers", "slurm_cpus_per_task", "slurm_timeout_min", "slurm_array_parallelism"):
        check_integer(f"--{option.replace('_', '-')}", getattr(args, option), minimum=1)
    check_integer("--slurm-gpus-per-node", args.slurm_gpus_per_node, minimum=0)
    for index in args.shards or []:
        check_integer("--shards", index, minimum=0, maximum=experiment.data.shards - 1)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise ValueError(f"--data-root {args.data_root} is not a folder.")
    if experiment.data.source == "cifar10" and args.data_root is None:
        from art_purifiers.data.cifar10 import resolve_cifar10_root

        resolve_cifar10_root(None)  # a clear error now, not in every shard's job
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder.")
    _writable("--out", str(Path(args.out) / f"{experiment.name}.json"), may_create=True)
    _check_device(args.device)
    if args.executor == "slurm":
        folder = args.slurm_folder or Path(args.out) / "slurm" / experiment.name
        executor = cluster_executor(folder, "slurm", args.slurm_partition, args.slurm_gpus_per_node,
                                    args.slurm_cpus_per_task, args.slurm_timeout_min, args.slurm_array_parallelism)
    else:
        executor = LocalExecutor(args.workers)
    table = run_experiment(experiment, args.out, executor, args.shards,
                           command="art-purifiers " + " ".join(sys.argv[1:]), data_root=args.data_root,
                           device=args.device, cache_dir=None if args.no_cache else args.cache_dir, quiet=args.quiet)
    if table is None:
        print(f"{experiment.name}: shards written to {Path(args.out) / 'shards' / experiment.name}; the table is "
              "merged once every shard is there.")
        return 0
    reading = table.reading()
    print(summary(table).to_text() + (f"\n{reading}" if reading else ""))
    print(f"written: {Path(args.out) / (experiment.name + '.json')} and .md")
    return 0


def _configure_logging(args: argparse.Namespace) -> None:
    """Warnings from everyone; this package's informational lines unless --quiet (always for train); the INFO lines
    of ART and other libraries only with --verbose."""
    verbose = getattr(args, "verbose", False) or args.command == "train"
    logging.basicConfig()
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    quiet = getattr(args, "quiet", args.command != "train")
    logging.getLogger("art_purifiers").setLevel(logging.WARNING if quiet else logging.INFO)


def run_defences(args: argparse.Namespace) -> int:
    from art_purifiers.catalogue import catalogue

    print(catalogue(), end="")
    return 0


def _passive_openmp_wait() -> None:
    """Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), unless the variable is set.
    OpenMP reads it once, when torch loads, so only before torch is imported. On a CPU shared with other jobs a
    spinning thread holds the core that the thread it waits for needs: the main job's adaptive attack through IRAD
    ran 6-7 times slower so on the 2-core machine (docs/results.md, "The main job")."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    _passive_openmp_wait()
    from art_purifiers import __version__
    from art_purifiers.evaluation.names import FORMATS

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="art-purifiers", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    _evaluate_parser(sub)
    _run_parser(sub)
    sub.add_parser("defences", help="list every defence with its parameters, defaults and ranges",
                   description="List every defence that --defence accepts, with its parameters, their defaults and "
                   "what each means (read from the classes themselves).")
    _train_parser(sub, full=argv[:1] == ["train"])
    merge = sub.add_parser("merge", help="merge the JSON tables of evaluate --shard runs into one table",
                           formatter_class=HelpFormatter)
    merge.add_argument("tables", nargs="+", help="JSON files written by evaluate --json")
    merge.add_argument("--format", default="text", choices=FORMATS, help="table format printed and written to --output")
    merge.add_argument("--output", default=None, help="also write the merged table to this file")
    merge.add_argument("--json", default=None, help="also write the merged table as JSON")
    merge.add_argument("--plot", default=None, help="write accuracy against eps to this image (needs matplotlib)")
    merge.add_argument("--over-seeds", action="store_true",
                       help="one row per random defence deployed with several seeds (dir:seed=0, dir:seed=1, ...): "
                            "mean SA and RA, min..max in the note")
    convert = sub.add_parser("convert-victim", help="convert a published victim checkpoint (CIFAR ResNet, DIR's "
                             "ResNet-18, RobustBench's WideResNet) to a victim .safetensors file")
    convert.add_argument("source", help="the published checkpoint (.th, .pt or .pth; read with weights_only=True)")
    convert.add_argument("destination", help="the .safetensors file to write")
    _import_parser(sub)
    _plot_parser(sub)
    args = parser.parse_args(argv)
    _configure_logging(args)
    for old, current in getattr(args, "deprecated", []):
        logging.getLogger("art_purifiers.cli").warning("%s is deprecated; it is %s now (one word per idea, see the "
                                                       "glossary).", old, current)
    handlers = {"evaluate": run_evaluate, "train": run_train, "merge": run_merge, "convert-victim": run_convert_victim,
                "plot": run_plot, "defences": run_defences, "import-weights": run_import_weights,
                "run": run_experiment_file}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError) as error:  # user errors; anything else is a bug and keeps its traceback
        parser.exit(2, f"art-purifiers: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
