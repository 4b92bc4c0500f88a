"""The recorded shards under docs/results/shards/ carry the key of their experiment's declaration (issue #24):
``adopt_shards`` keys a shard only when it is the shard declared, and ``art-purifiers run`` then merges the recorded
shards without evaluating anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from art_purifiers.cli import main
from art_purifiers.evaluation import experiments
from art_purifiers.evaluation.experiments import load_experiment, shard_jobs
from art_purifiers.evaluation.recorded import adopt_shards, check_declares, recorded_shards
from art_purifiers.evaluation.report import ResultTable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
EXPERIMENTS = sorted((REPO / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_recorded_shard_carries_the_key_of_its_declaration(path):
    """So that ``art-purifiers run experiments/NAME.toml --out docs/results`` finds them finished."""
    experiment = load_experiment(path)
    files = recorded_shards(experiment, RESULTS)
    for job in shard_jobs(experiment, RESULTS, sorted(files)):
        provenance = ResultTable.read(files[job.index]).meta.get("provenance", {})
        assert provenance.get("shard_key") == job.key, f"{files[job.index]} lacks the key of {path.name}"
        assert experiments.finished_shard(job) is not None


def test_run_merges_the_recorded_main_shards_without_evaluating(tmp_path, monkeypatch, capsys):
    shutil.copytree(RESULTS / "shards" / "main", tmp_path / "shards" / "main")

    def refuse(job):
        raise AssertionError(f"shard {job.index} was evaluated")

    monkeypatch.setattr(experiments, "_evaluate_shard", refuse)
    assert main(["run", str(REPO / "experiments" / "main.toml"), "--out", str(tmp_path), "--no-cache", "--quiet",
                 "--device", "cpu"]) == 0
    written, recorded = ResultTable.read(tmp_path / "main.json"), ResultTable.read(RESULTS / "main.json")
    assert written.rows == recorded.rows and len(written.rows) == 8
    assert {k: v for k, v in written.meta.items() if k != "provenance"} == {
        k: v for k, v in recorded.meta.items() if k != "provenance"}
    assert "written:" in capsys.readouterr().out


def _copy(name: str, folder: Path) -> Path:
    """The recorded shards of experiment ``name`` under ``folder/shards/name``, without their keys."""
    target = folder / "shards" / name
    shutil.copytree(RESULTS / "shards" / name, target)
    for path in target.glob("*.json"):
        document = json.loads(path.read_text())
        document["meta"].pop("provenance")
        path.write_text(json.dumps(document))
    return target


def test_adopt_keys_the_shards_and_changes_no_row(tmp_path):
    experiment = load_experiment(REPO / "experiments" / "dir_at_decision.toml")
    folder = _copy("dir_at_decision", tmp_path)
    before = {p.name: ResultTable.read(p) for p in folder.glob("*.json")}
    assert sorted(p.name for p in adopt_shards(experiment, tmp_path)) == sorted(before)
    for job in shard_jobs(experiment, tmp_path):
        after = experiments.finished_shard(job)
        assert after is not None and after.rows == before[job.path.name].rows
        assert after.meta["provenance"]["shard_key"] == job.key
    assert adopt_shards(experiment, tmp_path) == []  # keyed already: nothing rewritten


def _edit(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _set_meta(key, value):
    return lambda document: document["meta"].__setitem__(key, value)


def _rename_rows(old, new):
    def change(document):
        for row in document["rows"]:
            row["attack"] = row["attack"].replace(old, new)
    return change


def _drop_threat(threat):
    return lambda document: document.__setitem__("rows", [r for r in document["rows"] if r["threat"] != threat])


BAD_SHARDS = [
    ("main", _set_meta("victim", "resnet32"), "victim is 'resnet32' in the table, 'resnet20' in the declaration"),
    ("main", _set_meta("seed", 1), "seed is 1 in the table, 0 in the declaration"),
    ("main", _set_meta("images", [100, 199]), "images is [100, 199] in the table, [0, 99] in the declaration"),
    ("main", _set_meta("data_source", "$ART_PURIFIERS_CIFAR10"), "data source is 'cifar10'"),
    ("main", lambda d: d["meta"]["attacks"][0].__setitem__("steps", 10), "attacks is"),
    ("main", _rename_rows("pgd-20", "pgd-10"), "attack 'pgd-10 Linf eps=8/255 (step_size=2/255)' is none of"),
    ("main", _drop_threat("adaptive"), "threats is ['clean', 'oblivious'] in the table"),
    ("main", lambda d: d["rows"][1].__setitem__("defence", "dir"), "defences is ['none', 'dir', 'resampling', 'irad']"),
    ("dip_eot", _rename_rows("eot=8", "eot=4"), "is not of 8 EOT draws"),
    ("dir_at_decision", _rename_rows("1000q", "500q"), "'hopskipjump-500q Linf eps=8/255' is none of"),
    ("protocols_dir", _rename_rows("of 15", "of 8"), "is 'majority of 8' in the table, 'majority of 15' in the"),
    ("protocols_dir", lambda d: [r["attack_params"].update(protocol_draws=8) for r in d["rows"] if r["attack_params"]],
     "protocol majority of 8 draws is not declared"),
]


@pytest.mark.parametrize("name, change, message", BAD_SHARDS, ids=[m for _, _, m in BAD_SHARDS])
def test_adopt_refuses_a_shard_that_is_not_the_declared_one_and_writes_nothing(tmp_path, name, change, message):
    experiment = load_experiment(REPO / "experiments" / f"{name}.toml")
    folder = _copy(name, tmp_path)
    first, last = sorted(folder.glob("*.json"))[0], sorted(folder.glob("*.json"))[-1]
    _edit(last, change)
    written = {p: p.read_text() for p in folder.glob("*.json")}
    with pytest.raises(ValueError) as error:
        adopt_shards(experiment, tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith(f"{last} is not shard ")
    assert {p: p.read_text() for p in folder.glob("*.json")} == written
    assert "shard_key" not in first.read_text()


def test_adopt_refuses_shards_of_another_count_than_declared(tmp_path):
    experiment = load_experiment(REPO / "experiments" / "dir_at_main.toml")
    folder = _copy("dir_at_main", tmp_path)
    (folder / "0-of-5.json").rename(folder / "0-of-4.json")
    with pytest.raises(ValueError, match=r"0-of-4.json: not one of the 5 shards declared by .*dir_at_main.toml"):
        adopt_shards(experiment, tmp_path)
    assert recorded_shards(experiment, tmp_path / "elsewhere") == {}


def test_a_merged_table_is_checked_as_a_whole():
    experiment = load_experiment(REPO / "experiments" / "protocols_dir.toml")
    table = ResultTable.read(RESULTS / "protocols_dir.json")
    check_declares(experiment, table)
    table.rows[1].defence_params = {**table.rows[1].defence_params, "seed": "0,1"}
    with pytest.raises(ValueError, match="seeds of row"):
        check_declares(experiment, table)
    with pytest.raises(ValueError, match="defences is"):  # a merged table names the specs without their seeds
        check_declares(experiment, ResultTable.read(RESULTS / "shards" / "protocols_dir" / "0-of-1.json"))
