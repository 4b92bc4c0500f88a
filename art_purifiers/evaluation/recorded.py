"""Recorded tables against their experiment files: is a recorded table (or one shard of it) what the experiment
declares, and giving the shards recorded before shard keys existed the key of their declaration.

:func:`check_declares` compares a table's settings and row names with an
:class:`~art_purifiers.evaluation.experiments.Experiment`: the victim, the image range, the split, the shard, the
seed, the data source, the transfer source, the settings of every attack, the defences (row names, in order), the
threat models (in order), the attack of every row, the EOT draws, HopSkipJump's queries and the test-time protocols.
It cannot see what a table does not record: the batch size, or whether the weights behind a defence's name are those
of today (the fingerprints of tables recorded before the fingerprint covered every parameter differ from today's).

:func:`adopt_shards` writes the key of the declaration (:attr:`~art_purifiers.evaluation.experiments.ShardJob.key`)
into every shard of ``OUT/shards/NAME/`` that passes :func:`check_declares`, so that ``art-purifiers run`` finds it
finished instead of computing it again; the rows are not touched.
"""

from __future__ import annotations

import re
from pathlib import Path

from art_purifiers.evaluation.attacks import AttackSpec
from art_purifiers.evaluation.experiments import BUNDLED_SOURCE, Experiment, load_experiment, shard_jobs
from art_purifiers.evaluation.report import ResultTable

_SHARD_FILE = re.compile(r"(\d+)-of-(\d+)\.json")
#: What an adopted shard's provenance says about where its key came from.
ADOPTED = ("shard_key written by art_purifiers.evaluation.recorded.adopt_shards after checking the shard's settings "
           "and row names against the experiment file (the shard was recorded before its declaration had this key); "
           "the rows are as recorded")


def _expect(name: str, recorded, declared) -> None:
    if recorded != declared:
        raise ValueError(f"{name} is {recorded!r} in the table, {declared!r} in the declaration")


def check_declares(experiment: Experiment, table: ResultTable, shard: int | None = None) -> None:
    """Refuse a table that ``experiment`` does not declare: the merged table (``shard=None``) or shard ``shard``.

    :raises ValueError: One line naming the first setting or row name that differs.
    """
    options, data, meta = experiment.evaluation, experiment.data, table.meta
    first, last = (0, data.images - 1) if shard is None else data.part(shard)
    _expect("victim", meta.get("victim"), options.victim)
    _expect("seed", meta.get("seed"), options.seed)
    _expect("images", meta.get("images"), [first, last])
    _expect("n", meta.get("n"), last - first + 1)
    _expect("split", meta.get("split", "test"), data.split)
    if shard is None:
        _expect("shards", meta.get("shards", 1), data.shards)
    # A shard's label (meta "shard") is not checked: its numbers follow from its images, not from how the run that
    # made it was told to cut them (two recorded DIP tables ran images 0..3 as --n 4 --shard I/2).
    bundled = meta.get("data_source") == BUNDLED_SOURCE
    _expect("data source", "bundled" if bundled else "cifar10", data.source)
    _expect("source", meta.get("source"), options.source if "transfer" in options.threats else None)
    _expect("attacks", meta.get("attacks"), [spec.settings() for spec in options.attack_specs()])
    _check_row_names(experiment, table, seeds_merged=shard is None and len(options.deployment_seeds) > 1)


def _check_row_names(experiment: Experiment, table: ResultTable, seeds_merged: bool) -> None:
    """The defences and threat models in the declared order; attack labels with the declared EOT draws, queries
    and protocols; with the deployment seeds merged, every defence row names them all."""
    options, renamed = experiment.evaluation, experiment.renamed
    specs = options.defences if seeds_merged else options.defence_specs()
    bare = ["none"] if {"clean", "oblivious", "transfer"} & set(options.threats) else []
    _expect("defences", list(dict.fromkeys(r.defence for r in table.rows)),
            [*bare, *(renamed.get(spec, spec) for spec in specs)])
    _expect("threats", list(dict.fromkeys(r.threat for r in table.rows)), list(options.threats))
    labels = {spec.label() for spec in options.attack_specs()}
    # The decision threat model runs HopSkipJump once per budget, whatever the declared attacks (as the runner does).
    decisions = {AttackSpec("hopskipjump", norm=spec.norm, eps=spec.eps, queries=options.queries).label()
                 for spec in options.attack_specs()}
    for row in table.rows:
        attack = _without_protocol(options, row)
        if row.threat == "eot" and row.ra is not None:
            if not attack.endswith(f" eot={options.eot_draws}"):
                raise ValueError(f"row {row.key} is not of {options.eot_draws} EOT draws")
            attack = attack.removesuffix(f" eot={options.eot_draws}")
        expected = decisions if row.threat == "decision" else labels
        if row.threat != "clean" and attack not in expected:
            raise ValueError(f"row {row.key}: attack {attack!r} is none of the declared {sorted(expected)}")
        if seeds_merged and row.defence != "none":
            _expect(f"seeds of row {row.key}", row.defence_params.get("seed"),
                    ",".join(map(str, options.deployment_seeds)))


def _without_protocol(options, row) -> str:
    """The row's attack label without a test-time protocol's suffix (``" [worst of 16]"``), after checking the
    protocol and its draws are declared."""
    protocol = row.attack_params.get("protocol")
    if protocol is None:
        return row.attack
    if protocol not in options.protocols or row.attack_params.get("protocol_draws") != options.protocol_draws:
        raise ValueError(f"row {row.key}: protocol {protocol} of {row.attack_params.get('protocol_draws')} draws "
                         f"is not declared")
    suffix = f"{protocol} of {options.protocol_draws}"
    if row.threat == "clean":
        _expect(f"attack of row {row.key}", row.attack, suffix)
        return row.attack
    if not row.attack.endswith(f" [{suffix}]"):
        raise ValueError(f"row {row.key} does not name its protocol ({suffix})")
    return row.attack.removesuffix(f" [{suffix}]")


def recorded_shards(experiment: Experiment, out_dir: str | Path) -> dict[int, Path]:
    """The shard files of ``OUT/shards/NAME/`` by index (empty when there is no such folder).

    :raises ValueError: A file that is not ``I-of-N.json`` for the declared ``N`` shards (a table recorded in
        another number of shards than declared).
    """
    folder = Path(out_dir) / "shards" / experiment.name
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    found = {}
    for path in files:
        match = _SHARD_FILE.fullmatch(path.name)
        if match is None or int(match[2]) != experiment.data.shards or int(match[1]) >= experiment.data.shards:
            raise ValueError(f"{path}: not one of the {experiment.data.shards} shards declared by "
                             f"{experiment.path or experiment.name} (I-of-{experiment.data.shards}.json)")
        found[int(match[1])] = path
    return found


def adopt_shards(experiment: Experiment, out_dir: str | Path) -> list[Path]:
    """Give every shard in ``OUT/shards/NAME/`` the key of ``experiment``'s declaration, after checking with
    :func:`check_declares` that each one is the shard declared; shards that carry the key already are left as they
    are. Nothing is written unless every shard passes.

    :return: The files rewritten (their provenance only: ``shard_key``, ``adopted``, and the ``command`` recorded
        in the shard's settings moved into it).
    :raises ValueError: One line naming the first shard that is not what the experiment declares.
    """
    files = recorded_shards(experiment, out_dir)
    jobs = {job.index: job for job in shard_jobs(experiment, out_dir, sorted(files))}
    updated = {}
    for index, path in files.items():
        table = ResultTable.read(path)
        try:
            check_declares(experiment, table, index)
        except ValueError as error:
            raise ValueError(f"{path} is not shard {index} of {experiment.path or experiment.name}: {error}.") from None
        provenance = dict(table.meta.get("provenance", {}))
        if provenance.get("shard_key") == jobs[index].key:
            continue
        if "command" in table.meta:
            provenance["command"] = table.meta.pop("command")
        table.meta["provenance"] = {**provenance, "shard_key": jobs[index].key, "adopted": ADOPTED}
        updated[path] = table
    for path, table in updated.items():
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(table.to_json(), encoding="utf-8")
        temporary.replace(path)
    return list(updated)


def adopt_all(paths, out_dir: str | Path) -> dict[str, list[Path]]:
    """:func:`adopt_shards` for each experiment file of ``paths``: ``{file: files rewritten}``."""
    return {str(path): adopt_shards(load_experiment(path), out_dir) for path in paths}

