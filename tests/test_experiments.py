"""Experiments as data (issue #24, items 3 and 4): an experiment file is checked key by key, expands to the rows of
its recorded table, runs in shards (locally or as a submitit job array), resumes, and merges into the table a
single process computes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from art_purifiers.cli import main
from art_purifiers.evaluation import experiments
from art_purifiers.evaluation.experiments import (
    DeclaredImages,
    LocalExecutor,
    cluster_executor,
    load_experiment,
    parse_experiment,
    run_experiment,
)
from art_purifiers.evaluation.recorded import check_declares
from art_purifiers.evaluation.report import ResultTable

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.toml"))

TINY = """
description = "4 bundled images, resampling, FGSM"
[data]
images = 4
shards = {shards}
[evaluation]
defences = ["resampling"]
threats = ["clean", "oblivious", "bpda"]
attacks = ["fgsm"]
"""


def _figures(table: ResultTable) -> list[tuple]:
    """Everything a row says but the attack's wall time."""
    return [(r.defence, r.threat, r.attack, r.sa_correct, r.ra_correct, r.n, r.sa, r.ra, r.note, r.defence_params,
             r.attack_params) for r in table.rows]


def test_two_shards_through_submitit_equal_one_process(tmp_path):
    pytest.importorskip("submitit")
    single = run_experiment(parse_experiment(TINY.format(shards=1), "tiny"), tmp_path / "one", device="cpu")
    executor = cluster_executor(tmp_path / "submitit", cluster="local")
    sharded = run_experiment(parse_experiment(TINY.format(shards=2), "tiny"), tmp_path / "two", executor,
                             device="cpu")
    assert _figures(sharded) == _figures(single) and len(single.rows) == 5
    assert sorted(p.name for p in (tmp_path / "two" / "shards" / "tiny").iterdir()) == ["0-of-2.json", "1-of-2.json"]
    written = ResultTable.read(tmp_path / "two" / "tiny.json")
    assert _figures(written) == _figures(single)
    assert {k: v for k, v in sharded.meta.items() if k not in ("provenance", "shards")} == {
        k: v for k, v in single.meta.items() if k not in ("provenance", "shards")}
    provenance = written.meta["provenance"]
    assert {"experiment", "declaration", "command", "package_version", "git_commit", "merged_on"} <= set(provenance)
    assert [s["shard"] for s in provenance["shards"]] == [0, 1]
    assert all({"machine", "images_fingerprint", "shard_key"} <= set(s) for s in provenance["shards"])
    assert set(written.meta["defences"]) == {"resampling"}
    assert "provenance" not in (tmp_path / "two" / "tiny.md").read_text()


def test_finished_shards_are_not_run_again_unless_the_declaration_changed(tmp_path, monkeypatch):
    experiment = parse_experiment(TINY.format(shards=2), "tiny")
    first = run_experiment(experiment, tmp_path, LocalExecutor(), device="cpu")

    def refuse(job):
        raise AssertionError(f"shard {job.index} was run again")

    monkeypatch.setattr(experiments, "_evaluate_shard", refuse)
    assert _figures(run_experiment(experiment, tmp_path, device="cpu")) == _figures(first)
    changed = parse_experiment(TINY.format(shards=2).replace('"fgsm"', '"fgsm", "bim"'), "tiny")
    with pytest.raises(AssertionError, match="shard 0 was run again"):
        run_experiment(changed, tmp_path, device="cpu")


@pytest.mark.slow
def test_a_pool_of_local_processes_gives_the_table_of_one_process(tmp_path):
    experiment = parse_experiment(TINY.format(shards=2), "tiny")
    pooled = run_experiment(experiment, tmp_path / "pool", LocalExecutor(workers=2), device="cpu")
    assert _figures(pooled) == _figures(run_experiment(experiment, tmp_path / "one", device="cpu"))


def test_a_subset_of_shards_writes_no_table_until_all_are_there(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(shards=2))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--shards", "1", "--no-cache", "--quiet", "--device", "cpu"]) == 0
    assert not (out / "tiny.json").exists() and (out / "shards" / "tiny" / "1-of-2.json").is_file()
    assert "merged once every shard is there" in capsys.readouterr().out
    assert main(["run", str(path), "--out", str(out), "--no-cache", "--quiet", "--device", "cpu"]) == 0
    assert ResultTable.read(out / "tiny.json").meta["n"] == 4


def test_deployment_seeds_deploy_every_spec_once_per_seed():
    text = TINY.format(shards=1).replace('["resampling"]', '["dir", "dir:ratio=0.3"]') + "deployment_seeds = [0, 1]\n"
    options = parse_experiment(text, "seeded").evaluation
    assert options.defence_specs() == ["dir:seed=0", "dir:seed=1", "dir:ratio=0.3,seed=0", "dir:ratio=0.3,seed=1"]


@pytest.mark.parametrize("images, shards", [(4, 2), (500, 5), (8, 4), (7, 3), (5, 5)])
def test_shard_parts_are_those_of_evaluate_shard(images, shards):
    data = DeclaredImages(images=images, shards=shards)
    expected = [(int(p[0]), int(p[-1])) for p in np.array_split(np.arange(images), shards)]
    assert [data.part(i) for i in range(shards)] == expected


BAD = [
    ("colour = 1\n", "unknown keys ['colour']"),
    ("[data]\nimage = 4\n", "[data] has unknown keys ['image']"),
    ("[evaluation]\ndefence = ['irad']\n", "[evaluation] has unknown keys ['defence']"),
    ("[recorded]\nnames = {}\n", "[recorded] has unknown keys ['names']"),
    ("data = 3\n", "data must be a table"),
    ("description = 3\n", "description must be text"),
    ("[data]\nimages = 0\n", "data.images must be an integer in [1, inf)"),
    ("[data]\nimages = 4.5\n", "data.images must be an integer"),
    ("[data]\nimages = 4\nshards = 5\n", "data.shards must be an integer in [1, 4]"),
    ("[data]\nshards = true\n", "data.shards must be an integer"),
    ("[data]\nsource = 'imagenet'\n", "data.source must be one of"),
    ("[data]\nsplit = 'train'\n", "needs data.source = 'cifar10'"),
    ("[evaluation]\nthreats = ['oblivous']\n", "evaluation.threats must be one of"),
    ("[evaluation]\nthreats = []\n", "evaluation.threats must be a non-empty list"),
    ("[evaluation]\nattacks = ['pgd2']\n", "evaluation.attacks must be one of"),
    ("[evaluation]\neps = ['8']\n", "did you mean 8/255"),
    ("[evaluation]\neps = [0.03]\n", "evaluation.eps must hold non-empty text"),
    ("[evaluation]\neps = ['-1/255']\n", "evaluation.eps must lie in (0, inf)"),
    ("[evaluation]\neps = ['nan']\n", "evaluation.eps must be a number or a fraction"),
    ("[evaluation]\nstep_size = '1/0'\n", "evaluation.step_size must be a number or a fraction"),
    ("[evaluation]\nnorm = '1'\n", "evaluation.norm must be one of"),
    ("[evaluation]\niterations = 0\n", "evaluation.iterations must be an integer in [1, inf)"),
    ("[evaluation]\nsteps = 0\n", "evaluation.iterations must be an integer in [1, inf)"),
    ("[evaluation]\nsteps = 3\niterations = 3\n", "evaluation.steps is the former name of evaluation.iterations"),
    ("[evaluation]\neot_draws = 2.0\n", "evaluation.eot_draws must be an integer"),
    ("[evaluation]\nqueries = -3\n", "evaluation.queries must be an integer in [1, inf)"),
    ("[evaluation]\nprotocols = ['worse']\n", "evaluation.protocols must be one of"),
    ("[evaluation]\nprotocols = 'worst'\n", "evaluation.protocols must be a non-empty list"),
    ("[evaluation]\nprotocol_draws = 1\n", "evaluation.protocol_draws must be an integer in [2, inf)"),
    ("[evaluation]\ndraws_per_forward = 0\n", "evaluation.draws_per_forward must be an integer in [1, inf)"),
    ("[evaluation]\nseed = -1\n", "evaluation.seed must be an integer in [0, inf)"),
    ("[evaluation]\nbatch_size = 0\n", "evaluation.batch_size must be an integer in [1, inf)"),
    ("[evaluation]\nrandom_start = 1\n", "evaluation.random_start must be true or false"),
    ("[evaluation]\ndefences = ['iradd']\n", "Unknown defence 'iradd'"),
    ("[evaluation]\ndefences = ['irad:colour=1']\n", "colour"),
    ("[evaluation]\ndefences = ['irad', 'irad']\n", "repeats a defence"),
    ("[evaluation]\ndefences = ['dir:seed=0']\ndeployment_seeds = [0]\n", "give one or the other"),
    ("[evaluation]\ndefences = ['dir']\ndeployment_seeds = [0, 0]\n", "repeats a seed"),
    ("[evaluation]\ndeployment_seeds = [-1]\n", "evaluation.deployment_seeds must be an integer in [0, inf)"),
    ("[evaluation]\nthreats = ['clean', 'transfer']\n", "'transfer' and evaluation.source go together"),
    ("[evaluation]\nsource = 'resnet32'\n", "'transfer' and evaluation.source go together"),
    ("[evaluation]\nvictim = ''\n", "evaluation.victim must hold non-empty text"),
    ("[recorded]\nrenamed = {a = 1}\n", "recorded.renamed must map"),
    ("[recorded]\nrenamed = {irad = \"x\"}\n", "recorded.renamed names specs that are not in evaluation.defences"),
    ("[evaluation]\nthreats = ['clean', 'transfer']\nsource = 3\n", "evaluation.source must hold non-empty text"),
    ("[data\n", "not valid TOML"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m for _, m in BAD])
def test_bad_declarations_are_refused_with_one_line(text, message):
    with pytest.raises(ValueError) as error:
        parse_experiment(text, "bad", "experiments/bad.toml")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("experiments/bad.toml: ")


@pytest.mark.parametrize("settings, message", [
    ({"cluster": "pbs"}, "cluster must be one of"),
    ({"gpus_per_node": -1}, "gpus_per_node must be an integer in [0, inf)"),
    ({"cpus_per_task": 0}, "cpus_per_task must be an integer in [1, inf)"),
    ({"timeout_min": 1.5}, "timeout_min must be an integer"),
    ({"array_parallelism": 0}, "array_parallelism must be an integer in [1, inf)"),
    ({"mem_gb": float("nan")}, "mem_gb must be finite"),
])
def test_bad_executor_settings_are_refused(tmp_path, settings, message):
    pytest.importorskip("submitit")
    with pytest.raises(ValueError, match=re.escape(message)):
        cluster_executor(tmp_path, **{"cluster": "local", **settings})
    with pytest.raises(ValueError, match=re.escape("workers must be an integer in [1, inf)")):
        LocalExecutor(workers=0)


def _cli_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_run_refuses_bad_arguments_before_any_work(tmp_path, capsys, monkeypatch):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(shards=2))
    assert "no such file" in _cli_error(capsys, ["run", str(tmp_path / "none.toml")])
    assert "ends in .toml" in _cli_error(capsys, ["run", str(tmp_path)])
    assert "--shards must be an integer in [0, 1]" in _cli_error(capsys, ["run", str(path), "--shards", "2"])
    assert "--workers must be an integer in [1, inf)" in _cli_error(capsys, ["run", str(path), "--workers", "0"])
    assert "--slurm-gpus-per-node must be" in _cli_error(capsys, ["run", str(path), "--slurm-gpus-per-node", "-1"])
    assert "is not a folder" in _cli_error(capsys, ["run", str(path), "--data-root", str(tmp_path / "x")])
    assert "--device must be cpu or cuda" in _cli_error(capsys, ["run", str(path), "--device", "tpu"])
    assert "is a file; give a folder" in _cli_error(capsys, ["run", str(path), "--out", str(path)])
    monkeypatch.setitem(__import__("sys").modules, "submitit", None)
    assert "pip install submitit" in _cli_error(capsys, ["run", str(path), "--executor", "slurm",
                                                         "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(__import__("shutil").which("srun") is not None, reason="this machine is a Slurm node")
def test_slurm_executor_off_a_cluster_is_one_clear_line(tmp_path, capsys):
    pytest.importorskip("submitit")
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(shards=2))
    error = _cli_error(capsys, ["run", str(path), "--executor", "slurm", "--out", str(tmp_path / "out")])
    assert "--executor slurm" in error and "srun" in error and "Traceback" not in error


def test_cifar10_experiments_need_a_data_root(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ART_PURIFIERS_CIFAR10", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "cifar.toml"
    path.write_text(TINY.format(shards=1).replace("images = 4", "images = 4\nsource = 'cifar10'"))
    assert "CIFAR-10" in _cli_error(capsys, ["run", str(path), "--out", str(tmp_path / "out")])


# -- The recorded tables -------------------------------------------------------------------------------------------


def test_every_results_table_has_its_experiment():
    recorded = {p.stem for p in (REPO / "docs" / "results").glob("*.json")
                if "rows" in json.loads(p.read_text()) and "meta" in json.loads(p.read_text())}
    assert recorded == {p.stem for p in EXPERIMENTS}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_declares_its_recorded_table(path):
    """The experiment file and the recorded table are equivalent declarations: the same victim, data slice, seed,
    attack settings, defences (row names), threat models, attack of every row, EOT draws, HopSkipJump queries and
    protocols (:func:`~art_purifiers.evaluation.recorded.check_declares`, which also checks each recorded shard
    before ``adopt_shards`` keys it)."""
    check_declares(load_experiment(path), ResultTable.read(REPO / "docs" / "results" / f"{path.stem}.json"))


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if (REPO / "docs" / "results" / "shards" / p.stem).is_dir()],
                         ids=lambda p: p.stem)
def test_recorded_shards_merge_into_their_table(path):
    """The shards kept under docs/results/shards/NAME/ (I-of-N.json) are those of the recorded table: merged as
    ``art-purifiers run`` merges them, they give its counts and notes."""
    experiment = load_experiment(path)
    folder = REPO / "docs" / "results" / "shards" / path.stem
    files = [folder / f"{i}-of-{experiment.data.shards}.json" for i in range(experiment.data.shards)]
    merged = ResultTable.merge([ResultTable.read(f) for f in files])
    if len(experiment.evaluation.deployment_seeds) > 1:
        merged = merged.over_seeds()
    recorded = ResultTable.read(REPO / "docs" / "results" / f"{path.stem}.json")
    assert [(r.key, r.sa_correct, r.ra_correct, r.n, r.sa, r.ra, r.note) for r in merged.rows] == [
        (r.key, r.sa_correct, r.ra_correct, r.n, r.sa, r.ra, r.note) for r in recorded.rows]
    assert recorded.meta["provenance"]["experiment"] == f"experiments/{path.name}"


def test_main_experiment_is_the_main_job():
    """``art-purifiers run experiments/main.toml`` declares what ``art-purifiers evaluate`` runs with no arguments."""
    from art_purifiers.cli import MAIN_JOB

    experiment = load_experiment(REPO / "experiments" / "main.toml")
    options = experiment.evaluation
    assert (experiment.data.source, experiment.data.images) == ("bundled", MAIN_JOB["n"])
    assert (list(options.defences), list(options.threats), list(options.attacks)) == (
        MAIN_JOB["defence"], MAIN_JOB["threat"], MAIN_JOB["attack"])
    assert (options.iterations, options.step_size, options.eps, options.seed) == (
        MAIN_JOB["iterations"], MAIN_JOB["step_size"], ("8/255",), 0)
