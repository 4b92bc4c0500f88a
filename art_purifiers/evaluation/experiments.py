"""Experiments as data: a results table declared in a TOML file, run in shards, resumed, merged and written with
its provenance.

An experiment file (``experiments/NAME.toml``, format in ``docs/experiments.md``) declares one table: the data
slice (source, split, images, shards) and the evaluation (victim, defences, deployment seeds, threat models,
attacks and their settings). :func:`run_experiment` runs its shards through an executor (:class:`LocalExecutor`:
this process or a pool of local processes; :class:`SubmititExecutor`: a job array on a cluster scheduler through
submitit), skips every shard whose table is already on disk for the same declaration, merges the shards into one
:class:`~art_purifiers.evaluation.report.ResultTable` (equal, row for row, to a single-process run of the same
declaration) and writes it beside its shards::

    OUT/NAME.json  OUT/NAME.md  OUT/shards/NAME/I-of-N.json

This module reads no command line; ``art-purifiers run`` is its face.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

from art_purifiers.checks import check_choice, check_integer, check_number
from art_purifiers.evaluation.names import ATTACKS, PROTOCOLS, THREATS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the backport
    import tomli as tomllib

#: Where the data come from: the package's bundled test images, or a CIFAR-10 folder in the python layout
#: (``--data-root``, else ``$ART_PURIFIERS_CIFAR10``).
DATA_SOURCES = ("bundled", "cifar10")
SPLITS = ("test", "train")
#: What the bundled sample is called in a table's ``data_source`` (as ``art-purifiers evaluate`` writes it).
BUNDLED_SOURCE = "bundled sample"
_TOP_KEYS = ("description", "data", "evaluation", "recorded")
_DATA_KEYS = ("source", "split", "images", "shards")
_EVALUATION_KEYS = ("victim", "source", "defences", "deployment_seeds", "threats", "attacks", "norm", "eps",
                    "iterations", "step_size", "random_start", "eot_draws", "queries", "protocols", "protocol_draws",
                    "draws_per_forward", "seed", "batch_size", "steps")
#: Keys renamed to one word per idea (docs/glossary.md), ``{former: current}``: a file with the former key still reads.
_RENAMED_KEYS = {"steps": "iterations"}
#: The declaration names renamed options as they were named when shard keys were first computed, so that the keys of
#: shards recorded before a renaming are unchanged (``{current: name in the declaration}``).
_DECLARED_AS = {current: former for former, current in _RENAMED_KEYS.items()}
_RECORDED_KEYS = ("renamed",)


@dataclass(frozen=True)
class DeclaredImages:
    """Images ``0..images-1`` of ``split`` from ``source``, cut into ``shards`` near-equal consecutive parts."""

    source: str = "bundled"
    split: str = "test"
    images: int = 100
    shards: int = 1

    def __post_init__(self) -> None:
        check_choice("data.source", self.source, DATA_SOURCES)
        check_choice("data.split", self.split, SPLITS)
        check_integer("data.images", self.images, minimum=1)
        check_integer("data.shards", self.shards, minimum=1, maximum=self.images)
        if self.split == "train" and self.source == "bundled":
            raise ValueError("data.split = 'train' needs data.source = 'cifar10' (the bundled sample holds test "
                             "images only).")

    def part(self, index: int) -> tuple[int, int]:
        """First and last image of shard ``index`` (the split of ``numpy.array_split``, as ``evaluate --shard``)."""
        size, extra = divmod(self.images, self.shards)
        first = index * size + min(index, extra)
        return first, first + size + (index < extra) - 1


@dataclass(frozen=True)
class EvaluationOptions:
    """What ``art-purifiers evaluate`` takes as flags, declared once (same names, lists plural).

    :param defences: Defence specs (``NAME[:key=value,...]``), one row each, besides the bare victim (``none``).
    :param deployment_seeds: For random defences: every spec is deployed once per seed (``,seed=N`` appended) and
        the merged table reports the mean over the seeds with min..max (``merge --over-seeds``); empty: as given.
    :param eps: Budgets as text on the ``[0, 1]`` pixel scale (``"8/255"``), one row each.
    :param step_size: Step as text (``"2/255"``), or ``None`` for eps/4.
    """

    victim: str = "resnet20"
    source: str | None = None
    defences: tuple[str, ...] = ("resampling",)
    deployment_seeds: tuple[int, ...] = ()
    threats: tuple[str, ...] = ("clean", "oblivious")
    attacks: tuple[str, ...] = ("autoattack",)
    norm: str = "inf"
    eps: tuple[str, ...] = ("8/255",)
    iterations: int = 100
    step_size: str | None = None
    random_start: bool = True
    eot_draws: int = 8
    queries: int = 1000
    protocols: tuple[str, ...] = ("single",)
    protocol_draws: int = 16
    draws_per_forward: int | None = None
    seed: int = 0
    batch_size: int = 128

    def __post_init__(self) -> None:
        _check_texts("evaluation.victim", [self.victim])
        _check_texts("evaluation.defences", self.defences)
        for threat in _check_texts("evaluation.threats", self.threats):
            check_choice("evaluation.threats", threat, THREATS)
        for attack in _check_texts("evaluation.attacks", self.attacks):
            check_choice("evaluation.attacks", attack, ATTACKS)
        check_choice("evaluation.norm", self.norm, ("inf", "2"))
        for seed in self.deployment_seeds:
            check_integer("evaluation.deployment_seeds", seed, minimum=0)
        if len(set(self.deployment_seeds)) != len(self.deployment_seeds):
            raise ValueError(f"evaluation.deployment_seeds repeats a seed: {list(self.deployment_seeds)}.")
        for text in _check_texts("evaluation.eps", self.eps):
            parse_budget("evaluation.eps", text, self.norm)
        if self.step_size is not None:
            parse_budget("evaluation.step_size", self.step_size, self.norm)
        if not isinstance(self.random_start, bool):
            raise ValueError(f"evaluation.random_start must be true or false, got {self.random_start!r}.")
        for name in ("iterations", "eot_draws", "queries", "batch_size"):
            check_integer(f"evaluation.{name}", getattr(self, name), minimum=1)
        for protocol in _check_texts("evaluation.protocols", self.protocols):
            check_choice("evaluation.protocols", protocol, PROTOCOLS)
        check_integer("evaluation.protocol_draws", self.protocol_draws, minimum=2)
        if self.draws_per_forward is not None:
            check_integer("evaluation.draws_per_forward", self.draws_per_forward, minimum=1)
        check_integer("evaluation.seed", self.seed, minimum=0)
        if self.source is not None:
            _check_texts("evaluation.source", [self.source])
        if ("transfer" in self.threats) != (self.source is not None):
            raise ValueError("evaluation.threats 'transfer' and evaluation.source go together: transfer crafts its "
                             "examples on the source classifier.")
        self._check_defences()

    def _check_defences(self) -> None:
        from art_purifiers.specs import check_spec

        for spec in self.defence_specs():
            check_spec(spec)
        if self.deployment_seeds and any("seed=" in spec for spec in self.defences):
            raise ValueError("evaluation.defences: a spec sets seed= while evaluation.deployment_seeds deploys every "
                             "spec with each seed; give one or the other.")
        if len(set(self.defence_specs())) != len(self.defence_specs()):
            raise ValueError(f"evaluation.defences repeats a defence: {list(self.defences)}.")

    def defence_specs(self) -> list[str]:
        """The specs evaluated, one row each: every declared spec once per deployment seed (seeds inner)."""
        if not self.deployment_seeds:
            return list(self.defences)
        return [f"{spec}{',' if ':' in spec else ':'}seed={seed}" for spec in self.defences
                for seed in self.deployment_seeds]

    def attack_specs(self) -> list:
        """One :class:`~art_purifiers.evaluation.attacks.AttackSpec` per attack and budget (budgets inner)."""
        from art_purifiers.evaluation.attacks import AttackSpec

        step = None if self.step_size is None else parse_budget("step_size", self.step_size, self.norm)
        return [AttackSpec(name=name, norm=self.norm, eps=parse_budget("eps", eps, self.norm), steps=self.iterations,
                           step_size=step, random_start=self.random_start, queries=self.queries)
                for name in self.attacks for eps in self.eps]


@dataclass(frozen=True)
class Experiment:
    """One results table, declared: ``name`` (the file's stem) names its outputs.

    :param renamed: ``{spec evaluated now: row name in the recorded table}`` for rows recorded before a default
        changed (the spec now pins the former values); used only to compare with the recorded table.
    """

    name: str
    data: DeclaredImages
    evaluation: EvaluationOptions
    description: str = ""
    renamed: dict = field(default_factory=dict)
    path: str = ""

    def declaration(self) -> dict:
        """What determines the table's numbers (data slice and evaluation options), as plain JSON; renamed options
        under the name they had when shard keys were first computed (``iterations`` as ``steps``), so that the keys
        stay those of the recorded shards."""
        evaluation = {_DECLARED_AS.get(key, key): value for key, value in asdict(self.evaluation).items()}
        return {"data": asdict(self.data), "evaluation": evaluation}


def parse_budget(name: str, text, norm: str) -> float:
    """A budget or step written as text, ``"8/255"`` or ``"0.03"``: positive and finite; under L-inf a value above
    1 without ``/`` is refused (the images are in ``[0, 1]``, so ``"8"`` is almost surely ``"8/255"``)."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be text such as \"8/255\", got {text!r}.")
    try:
        exact = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{name} must be a number or a fraction such as 8/255, got {text!r}.") from None
    try:
        value = float(exact)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got {text!r}.") from None
    value = check_number(name, value, minimum=0, open_minimum=True)
    if norm == "inf" and value > 1 and "/" not in text:
        raise ValueError(f"{name} {text}: budgets are on the [0, 1] pixel scale, so an L-inf budget above 1 changes "
                         f"nothing; did you mean {text.strip()}/255?")
    return value


def _check_texts(name: str, values) -> tuple[str, ...]:
    """``values`` as a non-empty tuple of non-empty strings."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list of text, got {values!r}.")
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must hold non-empty text, got {value!r}.")
    return tuple(values)


def _current_keys(options: dict) -> dict:
    """``options`` with former key names (``steps``) under their current names (``iterations``)."""
    options = dict(options)
    for former, current in _RENAMED_KEYS.items():
        if former in options:
            if current in options:
                raise ValueError(f"evaluation.{former} is the former name of evaluation.{current}; give {current} "
                                 f"alone")
            options[current] = options.pop(former)
    return options


def _table(document: dict, key: str, allowed: Sequence[str], where: str) -> dict:
    """The TOML table ``document[key]`` (empty when absent), refusing keys outside ``allowed``."""
    value = document.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{where}{key} must be a table ([{key}]), got {value!r}.")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"{where}[{key}] has unknown keys {unknown}; allowed: {list(allowed)}.")
    return value


def parse_experiment(text: str, name: str, path: str = "") -> Experiment:
    """An experiment from the TOML ``text``; every key checked, unknown keys refused.

    :raises ValueError: One line naming the file and the first problem.
    """
    where = f"{path or name}: "
    try:
        document = tomllib.loads(text)
        unknown = sorted(set(document) - set(_TOP_KEYS))
        if unknown:
            raise ValueError(f"unknown keys {unknown}; allowed: {list(_TOP_KEYS)}")
        description = document.get("description", "")
        if not isinstance(description, str):
            raise ValueError(f"description must be text, got {description!r}")
        data = DeclaredImages(**_table(document, "data", _DATA_KEYS, ""))
        options = _current_keys(_table(document, "evaluation", _EVALUATION_KEYS, ""))
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        evaluation = EvaluationOptions(**options)
        renamed = _table(document, "recorded", _RECORDED_KEYS, "").get("renamed", {})
        if not isinstance(renamed, dict) or not all(isinstance(v, str) for v in renamed.values()):
            raise ValueError("recorded.renamed must map defence specs to the names recorded for them")
        unknown = sorted(set(renamed) - set(evaluation.defences))
        if unknown:
            raise ValueError(f"recorded.renamed names specs that are not in evaluation.defences: {unknown}")
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{where}not valid TOML ({error}).") from None
    except ValueError as error:
        raise ValueError(f"{where}{str(error).rstrip('.')}.") from None
    return Experiment(name, data, evaluation, description, dict(renamed), path)


def load_experiment(path: str | Path) -> Experiment:
    """The experiment in the TOML file ``path`` (its stem names the table).

    :raises ValueError: A missing or unreadable file, or a bad declaration (one line naming the file).
    """
    path = Path(path)
    if path.suffix != ".toml":
        raise ValueError(f"{path}: an experiment file ends in .toml.")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not readable: {error}.") from None
    return parse_experiment(text, path.stem, str(path))


@dataclass(frozen=True)
class ShardJob:
    """One shard of an experiment, as a worker runs it (picklable: it travels to local processes and cluster jobs).

    :param data_root: The CIFAR-10 folder for ``data.source = "cifar10"`` (``None``: ``$ART_PURIFIERS_CIFAR10``).
    :param device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
    :param cache_dir: The adversarial-example cache (shared by the shards and by reruns), or ``None``.
    """

    experiment: Experiment
    index: int
    out_dir: str
    data_root: str | None = None
    device: str | None = None
    cache_dir: str | None = None
    quiet: bool = True

    @property
    def path(self) -> Path:
        """Where the shard's table is written: ``OUT/shards/NAME/I-of-N.json``."""
        count = self.experiment.data.shards
        return Path(self.out_dir) / "shards" / self.experiment.name / f"{self.index}-of-{count}.json"

    @property
    def key(self) -> str:
        """sha256 of what determines the shard's numbers: the declaration and the shard's place in it."""
        text = json.dumps({**self.experiment.declaration(), "shard": self.index}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def finished_shard(job: ShardJob):
    """The shard's table when it is on disk for the same declaration (``None``: absent, unreadable or stale)."""
    from art_purifiers.evaluation.report import ResultTable

    if not job.path.is_file():
        return None
    try:
        table = ResultTable.read(job.path)
    except ValueError:
        return None
    return table if table.meta.get("provenance", {}).get("shard_key") == job.key else None


def run_shard(job: ShardJob) -> str:
    """Run one shard (unless :func:`finished_shard` finds it), write its table and return the file's path."""
    if finished_shard(job) is None:
        commit = git_commit()  # the code the shard runs: read before it starts, as the checkout may change meanwhile
        table = _evaluate_shard(job)
        table.meta["provenance"] = {"shard_key": job.key, "images_fingerprint": table.meta.pop("images_fingerprint"),
                                    "machine": machine(), "command": _command_line(), "git_commit": commit}
        job.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = job.path.with_suffix(".json.tmp")
        temporary.write_text(table.to_json(), encoding="utf-8")
        temporary.replace(job.path)  # a shard file is whole or absent, even when a job is killed
    return str(job.path)


def _evaluate_shard(job: ShardJob):
    """The shard's :class:`~art_purifiers.evaluation.report.ResultTable`: the one call of
    :func:`~art_purifiers.evaluation.runner.evaluate`, with the experiment's declared options as its settings."""
    from art_purifiers.defences import make_defence
    from art_purifiers.devices import resolve_device
    from art_purifiers.evaluation.report import describe_data
    from art_purifiers.evaluation.runner import evaluate
    from art_purifiers.keys import fingerprint
    from art_purifiers.models import load_victim

    options, data = job.experiment.evaluation, job.experiment.data
    device = resolve_device(job.device)
    victim = load_victim(options.victim).to(device)
    overrides = {"device_type": "cpu" if device.type == "cpu" else "gpu", "verbose": False}
    defences = {spec: make_defence(spec, victim=victim, **overrides) for spec in options.defence_specs()}
    first, last = data.part(job.index)
    x, y, source = _load_slice(data, job.data_root, last + 1)
    table = evaluate(victim, defences, x[first:], y[first:], _settings(options, job, str(device)),
                     source=None if options.source is None else load_victim(options.source).to(device))
    table.meta.update({"data_source": source, "split": data.split, "images": [first, last],
                       "shard": [job.index, data.shards], "images_fingerprint": fingerprint(x[first:], y[first:]),
                       "data": describe_data(source, first, last, (job.index, data.shards), data.split)})
    return table


def _settings(options: EvaluationOptions, job: ShardJob, device: str):
    """The :class:`~art_purifiers.evaluation.settings.EvaluationSettings` of a shard (threat names are presets, in
    their usual order, as ``art-purifiers evaluate`` builds them)."""
    from art_purifiers.evaluation.settings import preset

    fields = {"attacks": tuple(options.attack_specs()), "eot_draws": options.eot_draws, "queries": options.queries,
              "protocols": options.protocols, "protocol_draws": options.protocol_draws,
              "draws_per_forward": options.draws_per_forward, "seed": options.seed,
              "batch_size": options.batch_size, "device": device, "cache_dir": job.cache_dir,
              "verbose": not job.quiet, "victim_name": options.victim, "source_name": str(options.source)}
    return preset(*[name for name in THREATS if name in options.threats], **fields)


def _load_slice(data: DeclaredImages, data_root: str | None, count: int):
    """Images and labels ``0..count-1`` of the slice's split, and how the source is named in the table."""
    from art_purifiers.data import load_cifar10, load_sample
    from art_purifiers.data.cifar10 import resolve_cifar10_root

    if data.source == "bundled":
        x, y = load_sample(count)
        return x, y, BUNDLED_SOURCE
    root = resolve_cifar10_root(data_root)
    x, y = load_cifar10(root, data.split, range(count))
    # The folder is the reader's, not the table's: name how it was given, the images' fingerprint says what they are.
    return x, y, "CIFAR-10 " + ("--data-root" if data_root is not None else "$ART_PURIFIERS_CIFAR10 or user cache")


def machine() -> dict:
    """The host a shard ran on (its name: a sweep spans nodes) and what :func:`benchmark.machine` reports."""
    from art_purifiers.evaluation.benchmark import machine as host_description

    return {"host": platform.node(), **host_description()}


def _command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"


def git_commit() -> str | None:
    """The commit of the package's checkout (``+dirty`` when files differ from it), or ``None`` outside git."""
    folder = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if status else "") if commit else None


class LocalExecutor:
    """Runs shards on this machine: one after another in this process (``workers=1``), or in a pool of
    ``workers`` fresh processes (each shard's evaluation in a process of its own)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = check_integer("workers", workers, minimum=1)

    def map(self, function: Callable, jobs: Sequence) -> list:
        """``[function(job) for job in jobs]``, in order."""
        if self.workers == 1 or len(jobs) <= 1:
            return [function(job) for job in jobs]
        with ProcessPoolExecutor(min(self.workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            return list(pool.map(function, jobs))


class SubmititExecutor:
    """Runs shards as one job array of a submitit executor (``map_array``) and waits for every result.

    :param executor: A configured ``submitit.AutoExecutor``, ``SlurmExecutor`` or ``LocalExecutor``.
    """

    def __init__(self, executor) -> None:
        self.executor = executor

    def map(self, function: Callable, jobs: Sequence) -> list:
        """``[function(job) for job in jobs]`` run by the scheduler, in order; a failed job raises its error."""
        if not jobs:
            return []
        submitted = self.executor.map_array(function, list(jobs))
        return [job.result() for job in submitted]


def cluster_executor(folder: str | Path, cluster: str = "slurm", partition: str | None = None,
                     gpus_per_node: int = 0, cpus_per_task: int = 1, timeout_min: int = 60,
                     array_parallelism: int = 16, mem_gb: float | None = None) -> SubmititExecutor:
    """A :class:`SubmititExecutor` over ``submitit.AutoExecutor``: each shard a task of one Slurm job array.

    :param folder: Where submitit keeps the jobs' scripts, pickles and logs.
    :param cluster: ``"slurm"``, or ``"local"`` (submitit's local executor: the same path without a cluster).
    :param partition: Slurm partition (``None``: the cluster's default).
    :param array_parallelism: At most this many of the array's tasks run at once.
    :raises ValueError: submitit is not installed (``pip install 'art-purifiers[cluster]'``), or this machine is not
        a node of a Slurm cluster.
    """
    try:
        import submitit
    except ImportError:
        raise ValueError("--executor slurm needs submitit, which is not installed: pip install submitit "
                         "(or pip install 'art-purifiers[cluster]').") from None
    check_choice("cluster", cluster, ("slurm", "local"))
    parameters = {"gpus_per_node": check_integer("gpus_per_node", gpus_per_node, minimum=0),
                  "cpus_per_task": check_integer("cpus_per_task", cpus_per_task, minimum=1),
                  "timeout_min": check_integer("timeout_min", timeout_min, minimum=1),
                  "slurm_array_parallelism": check_integer("array_parallelism", array_parallelism, minimum=1)}
    if mem_gb is not None:
        parameters["mem_gb"] = check_number("mem_gb", mem_gb, minimum=0, open_minimum=True)
    if partition is not None:
        parameters["slurm_partition"] = partition
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except RuntimeError as error:  # no sbatch/srun here: submitit cannot reach a Slurm cluster
        raise ValueError(f"--executor {cluster}: {error} (run it on a node of the cluster).") from None
    executor.update_parameters(name="art-purifiers", **parameters)
    return SubmititExecutor(executor)


def shard_jobs(experiment: Experiment, out_dir: str | Path, shards: Sequence[int] | None = None,
               **settings) -> list[ShardJob]:
    """The experiment's shards as jobs (``shards``: only these indices), with ``settings`` of :class:`ShardJob`."""
    count = experiment.data.shards
    indices = range(count) if shards is None else sorted(set(shards))
    for index in indices:
        check_integer("shard", index, minimum=0, maximum=count - 1)
    return [ShardJob(experiment, index, str(out_dir), **settings) for index in indices]


def run_experiment(experiment: Experiment, out_dir: str | Path, executor=None, shards: Sequence[int] | None = None,
                   command: str | None = None, **settings):
    """Run the experiment's shards that are not finished, and merge them when all are there.

    :param executor: :class:`LocalExecutor` (default, in this process) or :class:`SubmititExecutor`.
    :param shards: Run only these shard indices (to spread them by hand); the merge waits for all.
    :param command: The command line recorded in the table's provenance (default: this process's).
    :param settings: ``data_root``, ``device``, ``cache_dir``, ``quiet`` of every :class:`ShardJob`.
    :return: The merged :class:`~art_purifiers.evaluation.report.ResultTable`, also written to ``OUT/NAME.json``
        and ``OUT/NAME.md``; ``None`` while shards are missing.
    """
    jobs = shard_jobs(experiment, out_dir, shards, **settings)
    pending = [job for job in jobs if finished_shard(job) is None]
    (executor or LocalExecutor()).map(run_shard, pending)
    every = shard_jobs(experiment, out_dir, None, **settings)
    if any(finished_shard(job) is None for job in every):
        return None
    table = merge_shards(experiment, every, command)
    out = Path(out_dir)
    (out / f"{experiment.name}.json").write_text(table.to_json(), encoding="utf-8")
    (out / f"{experiment.name}.md").write_text(summary(table).to_markdown(), encoding="utf-8")
    return table


def summary(table):
    """The table with its provenance shortened to the experiment file, the commit and the package version (for
    Markdown and the terminal; the JSON keeps all of it)."""
    from art_purifiers.evaluation.report import ResultTable

    provenance = table.meta.get("provenance", {})
    short = {key: provenance[key] for key in ("experiment", "git_commit", "package_version") if key in provenance}
    meta = {key: value for key, value in table.meta.items() if key != "provenance"}
    return ResultTable(list(table.rows), {**meta, **short})


def merge_shards(experiment: Experiment, jobs: Sequence[ShardJob], command: str | None = None):
    """One table from the finished shards (over deployment seeds when there are several), with its provenance."""
    from art_purifiers import __version__
    from art_purifiers.evaluation.report import ResultTable

    tables = [finished_shard(job) for job in jobs]
    shard_provenance = [{"shard": job.index, **table.meta.pop("provenance")} for job, table in zip(jobs, tables,
                                                                                                    strict=True)]
    merged = ResultTable.merge(tables)
    if len(experiment.evaluation.deployment_seeds) > 1:
        merged = merged.over_seeds()
    merged.meta["provenance"] = {
        "experiment": experiment.path or experiment.name, "declaration": experiment.declaration(),
        "command": command or _command_line(), "package_version": __version__, "git_commit": git_commit(),
        "merged_on": machine(), "shards": shard_provenance}
    return merged
