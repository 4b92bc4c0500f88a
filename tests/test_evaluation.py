"""The evaluation harness: threat models, attacks, tables, cache, sharding and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SHARED_CIFAR10, TinyCNN, needs_shared_data

from art_purifiers import ResamplingPreprocessor
from art_purifiers.cli import main
from art_purifiers.defences import make_defence, parse_defence_spec
from art_purifiers.evaluation import (
    ATTACKS,
    AttackSpec,
    BudgetedHopSkipJump,
    EOTClassifier,
    FABTargeted,
    ResultRow,
    ResultTable,
    StandardAutoAttack,
    art_classifier,
    evaluate,
    parse_eps,
)
from art_purifiers.evaluation.fab import project_to_hyperplane

QUICK_AA = AttackSpec(name="autoattack", eps=8 / 255, steps=5, extra={"square_queries": 20, "n_target_classes": 2})
ALL_THREATS = ("clean", "oblivious", "bpda", "adaptive", "eot", "decision")


def rows_by(table: ResultTable) -> dict[tuple[str, str], object]:
    return {(r.defence, r.threat): r for r in table.rows}


def test_parse_eps():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps("0.5") == 0.5 and parse_eps(0.25) == 0.25
    for bad in ("8", "-1/255", "x", float("nan"), 0.0, -0.1, float("inf")):
        with pytest.raises(ValueError):
            parse_eps(bad)


def test_defence_spec_parsing():
    assert parse_defence_spec("resampling:interpolation=nearest,magnitude=1.5,seed=0") == (
        "resampling", {"interpolation": "nearest", "magnitude": 1.5, "seed": 0})
    defence = make_defence("resampling:sampler=variant", device_type="cpu")
    assert isinstance(defence, ResamplingPreprocessor) and defence.sampler == "variant"
    with pytest.raises(ValueError, match="Unknown defence"):
        make_defence("jpeg")
    with pytest.raises(ValueError, match="key=value"):
        parse_defence_spec("resampling:nearest")
    with pytest.raises(ValueError, match="no weights"):
        make_defence("resampling", weights="w.safetensors")


@pytest.mark.parametrize("norm", [np.inf, 2])
def test_hyperplane_projection_is_exact_and_minimal(norm):
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(6, 40))
    w = rng.normal(size=(6, 40))
    b = rng.normal(size=6) * 0.5
    delta = project_to_hyperplane(p, w, b, norm)
    assert np.abs((w * (p + delta)).sum(1) + b).max() < 1e-6  # on the plane
    assert (p + delta).min() >= -1e-12 and (p + delta).max() <= 1 + 1e-12  # in the box
    shrunk = project_to_hyperplane(p, w, b, norm) * 0.97  # any shorter move in that direction falls short
    assert (np.abs((w * (p + shrunk)).sum(1) + b) > 1e-6).all()


@pytest.mark.parametrize("norm", [np.inf, 2])
def test_fab_targeted_reaches_its_targets(norm, tiny_model, images, labels):
    classifier = art_classifier(tiny_model)
    targets = np.argsort(-classifier.predict(images), axis=1)[:, 1]
    x_adv = FABTargeted(classifier, norm=norm, n_iter=20).generate(images, labels, targets)
    assert (classifier.predict(x_adv).argmax(1) == targets).all()
    assert 0.0 <= x_adv.min() and x_adv.max() <= 1.0


def test_fab_margin_gradient_equals_class_gradient_difference(tiny_model, images, labels):
    """One backward pass of the logit contrast gives grad(z_t - z_y) per point, defences included."""
    classifier = art_classifier(tiny_model, [ResamplingPreprocessor(device_type="cpu")])
    targets = (labels + 1) % 10
    margin, gradient = FABTargeted(classifier, batch_size=3)._margin_and_gradient(images, labels, targets)
    expected = (classifier.class_gradient(images, label=targets)[:, 0]
                - classifier.class_gradient(images, label=labels)[:, 0])
    np.testing.assert_allclose(gradient, expected.reshape(len(images), -1), rtol=1e-4, atol=1e-6)
    logits = classifier.predict(images)
    np.testing.assert_allclose(margin, logits[np.arange(len(images)), targets] - logits[np.arange(len(images)), labels],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("version", ["standard", "rand"])
@pytest.mark.parametrize("norm", [np.inf, 2])
def test_autoattack_breaks_points_within_budget(norm, version, tiny_model, images, labels):
    classifier = art_classifier(tiny_model)
    eps = 8 / 255 if norm == np.inf else 0.5
    attack = StandardAutoAttack(classifier, norm=norm, eps=eps, n_iter=5, n_target_classes=2, square_queries=20,
                                version=version)
    x_adv = attack.generate(images, labels)
    delta = (x_adv - images).reshape(len(images), -1)
    size = np.abs(delta).max(1) if norm == np.inf else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps * (1 + 1e-4)
    broken = classifier.predict(x_adv).argmax(1) != labels
    assert broken.sum() == sum(attack.broken_by.values())
    assert attack.broken_by and set(attack.broken_by) <= set(StandardAutoAttack.VERSIONS[version])
    assert attack.params["components"] == list(StandardAutoAttack.VERSIONS[version])


def test_autoattack_rand_runs_apgd_ce_then_apgd_dlr(tiny_model, images, labels):
    classifier = art_classifier(tiny_model)
    attack = StandardAutoAttack(classifier, eps=1 / 255, n_iter=3, version="rand")
    names = [name for name, _, _ in attack._steps(np.zeros((len(images), 9), dtype=np.int64))]
    assert names == ["apgd-ce", "apgd-dlr"]
    with pytest.raises(ValueError, match="version"):
        StandardAutoAttack(classifier, version="plus")


@pytest.mark.parametrize("name", [a for a in ATTACKS if a != "autoattack"])
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_attacks_respect_budget(name, norm, tiny_model, images, labels):
    eps = 4 / 255 if norm == "inf" else 0.3
    spec = AttackSpec(name=name, norm=norm, eps=eps, steps=3)
    x_adv = spec.build(art_classifier(tiny_model)).generate(images, labels)
    delta = (x_adv - images).reshape(len(images), -1)
    size = np.abs(delta).max(1) if norm == "inf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps * (1 + 1e-4) + 1e-6
    assert 0.0 <= x_adv.min() and x_adv.max() <= 1.0


def test_eot_classifier_averages_draws(tiny_model, images):
    defence = ResamplingPreprocessor(sampler="variant", device_type="cpu", seed=None)
    eot = EOTClassifier(tiny_model, defence, draws=4)
    x = torch.from_numpy(images)
    logits = eot(x)
    assert logits.shape == (len(images), 10)
    # Deterministic defence: the average of identical draws is the single draw.
    fixed = EOTClassifier(tiny_model, ResamplingPreprocessor(device_type="cpu"), draws=3)
    with torch.no_grad():
        single = tiny_model(ResamplingPreprocessor(device_type="cpu").forward(x)[0])
        torch.testing.assert_close(fixed(x), single)
    with pytest.raises(ValueError, match="draws"):
        EOTClassifier(tiny_model, defence, draws=0)


def test_budgeted_hopskipjump_counts_queries_and_is_seeded(tiny_model, images, labels):
    classifier = art_classifier(tiny_model)
    calls = []
    predict = classifier.predict
    classifier.predict = lambda x, **kw: (calls.append(len(x)), predict(x, **kw))[1]

    def attack(seed):
        return BudgetedHopSkipJump(classifier, norm=2, eps=1.0, max_queries=150, init_eval=10, init_size=20,
                                   seed=seed)

    first = attack(0)
    x_adv = first.generate(images[:2], labels[:2])
    assert x_adv.shape == images[:2].shape and x_adv.dtype == np.float32
    assert (first.queries_used <= 150).all() and (first.queries_used > 0).all()
    assert sum(calls) == first.queries_used.sum() + 2  # exact count: the only other call is the initial predict
    np.random.seed(0)  # noqa: NPY002 - ART's gradient estimate uses numpy's global generator
    again = attack(0).generate(images[:2], labels[:2])
    np.random.seed(0)  # noqa: NPY002
    np.testing.assert_array_equal(again, attack(0).generate(images[:2], labels[:2]))
    wrong = (labels[:2] + 1) % 10  # points already misclassified are left alone
    np.testing.assert_array_equal(attack(0).generate(images[:2], wrong), images[:2])


def test_threat_models_table(tiny_model, images, labels, tmp_path, monkeypatch):
    identity = ResamplingPreprocessor(magnitude=0.0, device_type="cpu")
    variant = ResamplingPreprocessor(sampler="variant", magnitude=0.5, device_type="cpu", seed=0)
    defences = {"identity": identity, "variant": variant}
    kwargs = {"threats": ALL_THREATS, "attack": QUICK_AA, "cache_dir": tmp_path, "eot_draws": 2, "queries": 60}
    table = evaluate(tiny_model, defences, images, labels, **kwargs)
    rows = rows_by(table)
    assert rows[("none", "clean")].sa == 100.0  # labels are the tiny model's own predictions
    for row in table.rows:
        if row.ra is not None:
            assert 0.0 <= row.ra <= row.sa  # robust = correct both clean and under attack
    # The identity defence attacked adaptively is the bare victim attacked.
    assert rows[("identity", "adaptive")].ra == rows[("none", "oblivious")].ra
    assert rows[("identity", "clean")].sa == rows[("none", "clean")].sa
    assert rows[("identity", "eot")].ra is None and "deterministic" in rows[("identity", "eot")].note
    assert rows[("variant", "eot")].ra is not None and "2 draws" in rows[("variant", "eot")].note
    assert "EOT" in rows[("variant", "decision")].note
    # Cached rerun: identical table, without running any attack.
    for attack in (StandardAutoAttack, BudgetedHopSkipJump):
        monkeypatch.setattr(attack, "generate", lambda *a, **k: pytest.fail("cache miss"))
    again = evaluate(tiny_model, defences, images, labels, **kwargs)
    assert again.to_json() == table.to_json()


def test_deployment_seeds_share_the_attack_and_differ_in_the_judge(tiny_model, images, labels, tmp_path,
                                                                   monkeypatch):
    # A random defence's seed fixes the judge's draws only: the attacker draws its own (seed=None), so one crafted
    # set serves every deployment seed, and a seed the attacker knew would show as an exactly attacked draw.
    defences = {f"seed{s}": ResamplingPreprocessor(sampler="variant", magnitude=0.5, device_type="cpu", seed=s)
                for s in (0, 1)}
    seen = []
    original = ResamplingPreprocessor.forward

    def spy(self, x, y=None):
        seen.append(self.seed)
        return original(self, x, y)

    monkeypatch.setattr(ResamplingPreprocessor, "forward", spy)
    evaluate(tiny_model, defences, images, labels, threats=("adaptive", "eot"), attack=AttackSpec("pgd", steps=2),
             cache_dir=tmp_path, eot_draws=2)
    entries = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".partial.npz"))
    assert len(entries) == 2  # one adaptive and one eot set, for both seeds
    assert set(seen) == {0, 1, None}  # judges seeded, attackers not


def test_non_differentiable_defence_is_refused_adaptive(tiny_model, images, labels):
    class Quantise(ResamplingPreprocessor):
        differentiable = False

        def purify(self, x, generator):
            return torch.round(x * 8) / 8

    table = evaluate(tiny_model, {"q": Quantise(gradient="bpda", device_type="cpu")}, images, labels,
                     threats=("adaptive", "bpda"), attack=AttackSpec("pgd", steps=2))
    rows = rows_by(table)
    assert rows[("q", "adaptive")].ra is None and "refused" in rows[("q", "adaptive")].note
    assert rows[("q", "bpda")].ra is not None


def test_eot_keeps_a_bpda_gradient_mode(tiny_model, images, labels):
    # BPDA+EOT (DIR's Table 3 attack): gradient="bpda" set on a differentiable random defence.
    defences = {mode: ResamplingPreprocessor(sampler="variant", magnitude=0.5, device_type="cpu", gradient=mode)
                for mode in ("exact", "bpda")}
    table = evaluate(tiny_model, defences, images, labels, threats=("eot",), attack=AttackSpec("pgd", steps=2),
                     eot_draws=2)
    notes = {r.defence: r.note for r in table.rows}
    assert notes["exact"].endswith("(exact)") and notes["bpda"].endswith("(bpda)")


def test_rows_over_deployment_seeds_collapse_to_mean_and_spread():
    def row(defence, seed, sa, ra, threat="eot"):
        params = {"ratio": 0.5} if seed is None else {"ratio": 0.5, "seed": seed}
        return ResultRow.from_counts(defence, threat, "pgd-20", sa, ra, 100, 1.0, "", params, {})

    table = ResultTable([row("none", None, 91, 0, "clean")] + [row(f"dir:ratio=0.5,seed={s}", s, 80 + s, 30 + 2 * s)
                                                               for s in (0, 1, 2)] + [row("dir", None, 70, 20)])
    collapsed = table.over_seeds()
    assert [r.defence for r in collapsed.rows] == ["none", "dir:ratio=0.5", "dir"]
    mean = collapsed.rows[1]
    assert (mean.sa, mean.ra, mean.n) == (81.0, 32.0, 100)
    assert "seeds 0,1,2" in mean.note and "RA 30.0..34.0" in mean.note and "SA 80.0..82.0" in mean.note
    assert collapsed.rows[2].ra == 20.0  # an unseeded random row is not a seed group


def test_rows_over_deployment_seeds_keep_what_every_seed_noted():
    def row(seed, note, threat="clean"):
        return ResultRow.from_counts(f"dir:seed={seed}", threat, "worst of 4", 50, None, 100, 1.0, note,
                                     {"seed": seed}, {})

    table = ResultTable([row(0, "worst of 4 draws (seeds 0); mean 60%"), row(1, "worst of 4 draws (seeds 1); mean 62%"),
                         row(0, "same", "oblivious"), row(1, "same", "oblivious"), row(0, "", "eot"), row(1, "", "eot"),
                         row(0, "only seed 0", "bpda"), row(1, "", "bpda")])
    notes = [r.note.partition("); ")[2] for r in table.over_seeds().rows]
    assert notes == ["seed 0: worst of 4 draws (seeds 0); mean 60% / seed 1: worst of 4 draws (seeds 1); mean 62%",
                     "same", "", "seed 0: only seed 0 / seed 1: -"]


def test_merged_shards_keep_what_every_shard_noted():
    def shard(index, note):
        row = ResultRow.from_counts("dir:seed=0", "clean", "worst of 4", 5, None, 10, 1.0, note, {"seed": 0}, {})
        return ResultTable([row], meta={"shard": [index, 2], "images": [10 * index, 10 * index + 9]})

    assert ResultTable.merge([shard(0, "same"), shard(1, "same")]).rows[0].note == "same"
    assert ResultTable.merge([shard(0, "mean 60%"), shard(1, "mean 70%")]).rows[0].note == (
        "shard 0: mean 60% / shard 1: mean 70%")
    assert ResultTable.merge([shard(0, ""), shard(1, "")]).rows[0].note == ""


def test_protocol_means_are_averaged_when_rows_combine():
    """A protocol row's mean single-draw accuracies are means over its images: merged shards weight them by their
    images, rows over seeds average them and gather the seeds (the first row's values were kept before)."""
    def row(seed, n, sa, ra, first=0):
        params = {"protocol": "worst", "protocol_seeds": [seed], "mean_single_draw_sa": sa, "mean_single_draw_ra": ra}
        table = ResultTable([ResultRow.from_counts(f"dir:seed={seed}", "eot", "pgd [worst of 4]", n, 0, n, 1.0, "",
                                                   {"seed": seed}, params)],
                            meta={"shard": [first, 2], "images": [first, first + n - 1]})
        return table

    merged = ResultTable.merge([row(0, 1, 100.0, 50.0), row(0, 3, 20.0, 10.0, first=1)]).rows[0].attack_params
    assert merged["mean_single_draw_sa"] == 40.0 and merged["mean_single_draw_ra"] == 20.0
    assert merged["protocol_seeds"] == [0]
    seeds = ResultTable([row(0, 4, 80.0, None).rows[0], row(1, 4, 60.0, None).rows[0]]).over_seeds()
    params = seeds.rows[0].attack_params
    assert params["mean_single_draw_sa"] == 70.0 and params["mean_single_draw_ra"] is None
    assert params["protocol_seeds"] == [0, 1]


def test_merge_of_shards_equals_counts(tiny_model, images, labels):
    spec = AttackSpec("fgsm")
    defences = {"r": ResamplingPreprocessor(device_type="cpu")}
    whole = evaluate(tiny_model, defences, images, labels, threats=("clean", "oblivious"), attack=spec)
    parts = [evaluate(tiny_model, defences, images[s], labels[s], threats=("clean", "oblivious"), attack=spec)
             for s in (slice(0, 1), slice(1, 4))]
    merged = ResultTable.merge([ResultTable.from_json(p.to_json()) for p in parts])
    # FGSM is deterministic, so shards reproduce the whole run exactly.
    assert [(r.key, r.sa, r.ra, r.n) for r in merged.rows] == [(r.key, r.sa, r.ra, r.n) for r in whole.rows]
    with pytest.raises(ValueError, match="same rows"):
        ResultTable.merge([parts[0], ResultTable(rows=parts[1].rows[:1])])
    for part, index in zip(parts, (0, 1), strict=True):
        part.meta["shard"] = [index, 2]
    with pytest.raises(ValueError, match="twice"):
        ResultTable.merge([parts[0], parts[0]])
    parts[1].meta["seed"] = 1
    with pytest.raises(ValueError, match="seed"):
        ResultTable.merge(parts)


def test_table_formats(tiny_model, images, labels):
    table = evaluate(tiny_model, {"r": ResamplingPreprocessor(device_type="cpu")}, images, labels,
                     threats=("clean",))
    assert "| r | clean |" in table.render("markdown")
    assert json.loads(table.render("json"))["rows"][1]["defence"] == "r"
    assert table.render("csv").splitlines()[0].startswith("defence,threat,attack,sa,ra")
    assert table.render("text").splitlines()[0].split()[:3] == ["defence", "threat", "attack"]
    with pytest.raises(ValueError, match="format"):
        table.render("html")


def test_unknown_threat_and_reserved_name_are_refused(tiny_model, images, labels):
    with pytest.raises(ValueError, match="Unknown threat"):
        evaluate(tiny_model, {}, images, labels, threats=("telepathy",))
    with pytest.raises(ValueError, match="bare victim"):
        evaluate(tiny_model, {"none": ResamplingPreprocessor()}, images, labels)


def test_plot_accuracy_vs_eps(tiny_model, images, labels, tmp_path):
    pytest.importorskip("matplotlib")
    from art_purifiers.evaluation.plots import plot_accuracy_vs_eps

    specs = [AttackSpec("fgsm", eps=e) for e in (2 / 255, 8 / 255)]
    table = evaluate(tiny_model, {"r": ResamplingPreprocessor(device_type="cpu")}, images, labels,
                     threats=("clean", "oblivious"), attack=specs)
    path = plot_accuracy_vs_eps(table, tmp_path / "acc.png")
    assert path.stat().st_size > 1000


def test_cli_evaluate_shards_and_merge(tmp_path, capsys):
    common = ["evaluate", "--n", "6", "--attack", "fgsm", "--threat", "clean", "oblivious", "bpda", "--no-cache",
              "--quiet", "--device", "cpu", "--format", "json"]
    assert main([*common, "--json", str(tmp_path / "all.json")]) == 0
    for i in range(2):
        assert main([*common, "--shard", f"{i}/2", "--json", str(tmp_path / f"s{i}.json")]) == 0
    assert main(["merge", str(tmp_path / "s0.json"), str(tmp_path / "s1.json"), "--json",
                 str(tmp_path / "merged.json")]) == 0
    whole = json.loads((tmp_path / "all.json").read_text())
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert {(r["defence"], r["threat"]) for r in whole["rows"]} == {
        ("none", "clean"), ("resampling", "clean"), ("none", "oblivious"), ("resampling", "oblivious"),
        ("resampling", "bpda")}
    assert [(r["sa"], r["ra"]) for r in merged["rows"]] == [(r["sa"], r["ra"]) for r in whole["rows"]]
    assert merged["meta"]["n"] == 6 and merged["meta"]["shards"] == 2


def test_cli_reports_bad_arguments_without_traceback(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--n", "500", "--no-cache", "--quiet"])
    assert exit_info.value.code == 2
    assert "bundled sample has 200 images" in capsys.readouterr().err


def test_cli_train_split_needs_a_data_root(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--split", "train", "--n", "4", "--no-cache", "--quiet"])
    assert exit_info.value.code == 2
    assert "--split train needs --data-root" in capsys.readouterr().err


@needs_shared_data
def test_cli_evaluates_training_images(tmp_path):
    assert main(["evaluate", "--split", "train", "--data-root", str(SHARED_CIFAR10), "--n", "4", "--threat", "clean",
                 "--no-cache", "--quiet", "--device", "cpu", "--json", str(tmp_path / "t.json")]) == 0
    meta = json.loads((tmp_path / "t.json").read_text())["meta"]
    assert meta["split"] == "train" and "CIFAR-10 train images 0..3" in meta["data"]


def test_torchrun_splits_and_gathers(tmp_path):
    """Two CPU ranks under torchrun print one merged table equal to the single-process one."""
    import shutil
    import subprocess
    import sys

    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed")
    args = ["evaluate", "--num-images", "6", "--attack", "fgsm", "--threat", "clean", "oblivious", "--no-cache",
            "--quiet", "--device", "cpu", "--format", "json"]
    subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "art_purifiers.cli", *args, "--json",
                    str(tmp_path / "ranks.json")], check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "art_purifiers.cli", *args, "--json", str(tmp_path / "one.json")],
                   check=True, capture_output=True, timeout=300)
    ranks = json.loads((tmp_path / "ranks.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert ranks["meta"]["shards"] == 2 and ranks["meta"]["n"] == 6
    assert [(r["sa"], r["ra"]) for r in ranks["rows"]] == [(r["sa"], r["ra"]) for r in one["rows"]]


def test_autoattack_resumes_from_its_checkpoint(tiny_model, images, labels, tmp_path, monkeypatch):
    classifier = art_classifier(tiny_model)

    def attack(checkpoint=None):
        return StandardAutoAttack(classifier, eps=2 / 255, n_iter=3, n_target_classes=2, square_queries=10,
                                  seed=3, checkpoint=checkpoint)

    uninterrupted = attack().generate(images, labels)
    original = FABTargeted.generate

    def crash(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(FABTargeted, "generate", crash)
    with pytest.raises(RuntimeError, match="interrupted"):
        attack(tmp_path / "aa.npz").generate(images, labels)
    assert (tmp_path / "aa.npz").is_file()
    monkeypatch.setattr(FABTargeted, "generate", original)
    with np.load(tmp_path / "aa.npz") as saved:
        spent = float(saved["seconds"])
    assert spent > 0
    resumed = attack(tmp_path / "aa.npz")
    np.testing.assert_array_equal(resumed.generate(images, labels), uninterrupted)
    assert resumed.resumed_seconds == spent  # the interrupted part's time is carried into the total


def test_autoattack_refuses_a_damaged_checkpoint(tiny_model, images, labels, tmp_path):
    from art_purifiers.evaluation.progress import save_progress

    x = images.astype(np.float32)
    save_progress(tmp_path / "aa.npz", x, x_adv=x, robust=np.ones(len(x), dtype=np.float32), done=np.int64(1),
                  broken_by=np.array("{}"), seconds=np.float64(1.0))
    attack = StandardAutoAttack(art_classifier(tiny_model), eps=2 / 255, n_iter=2, checkpoint=tmp_path / "aa.npz")
    with pytest.raises(ValueError, match="boolean mask"):
        attack.generate(x, labels)


def test_hopskipjump_resumes_from_its_checkpoint(tiny_model, images, labels, tmp_path, monkeypatch):
    classifier = art_classifier(tiny_model)

    def attack(checkpoint=None):
        return BudgetedHopSkipJump(classifier, norm=2, eps=1.0, max_queries=80, init_eval=10, init_size=20, seed=1,
                                   checkpoint=checkpoint)

    np.random.seed(5)  # noqa: NPY002 - ART's gradient estimate uses numpy's global generator
    uninterrupted = attack().generate(images[:3], labels[:3])
    original, calls = BudgetedHopSkipJump._attack_one, []

    def crash_on_the_second(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return original(self, *args)

    monkeypatch.setattr(BudgetedHopSkipJump, "_attack_one", crash_on_the_second)
    np.random.seed(5)  # noqa: NPY002
    with pytest.raises(RuntimeError, match="interrupted"):
        attack(tmp_path / "hsj.npz").generate(images[:3], labels[:3])
    monkeypatch.setattr(BudgetedHopSkipJump, "_attack_one", original)
    with np.load(tmp_path / "hsj.npz") as saved:
        assert int(saved["done"]) == 1 and float(saved["seconds"]) > 0
    np.random.seed(99)  # noqa: NPY002 - the checkpoint restores the state the interrupted run had
    resumed = attack(tmp_path / "hsj.npz")
    np.testing.assert_array_equal(resumed.generate(images[:3], labels[:3]), uninterrupted)
    assert resumed.resumed_seconds > 0 and (resumed.queries_used > 0).all()
    # A checkpoint of other inputs is ignored, a damaged one refused.
    assert attack(tmp_path / "hsj.npz").generate(images[3:5], labels[3:5]).shape == images[3:5].shape
    from art_purifiers.evaluation.progress import save_progress

    save_progress(tmp_path / "bad.npz", images[:3].astype(np.float32), x_adv=np.full(images[:3].shape, np.nan,
                  dtype=np.float32), queries=np.zeros(3, dtype=np.int64), done=np.int64(1))
    with pytest.raises(ValueError, match="finite float32"):
        attack(tmp_path / "bad.npz").generate(images[:3], labels[:3])


def test_perturbation_size_and_budget():
    from art_purifiers.evaluation.norms import perturbation_size, within_budget

    x = np.zeros((3, 1, 2, 2), dtype=np.float32)
    x_adv = x.copy()
    x_adv[0, 0, 0, 0] = 0.5
    x_adv[1] = 0.3
    x_adv[2, 0, 1, 1] = -0.1
    np.testing.assert_allclose(perturbation_size(x_adv - x, np.inf), [0.5, 0.3, 0.1], rtol=1e-6)
    np.testing.assert_allclose(perturbation_size(x_adv - x, "2"), [0.5, 0.6, 0.1], rtol=1e-6)
    assert within_budget(x, x_adv, "inf", 0.3).tolist() == [False, True, True]
    assert within_budget(x, x_adv, 2, 0.5).tolist() == [True, False, True]


def test_transfer_crafts_on_the_source(tiny_model, images, labels, tmp_path):
    """``transfer``: examples crafted on another classifier; each source gets its own cache entry."""
    torch.manual_seed(5)
    source = TinyCNN().eval()
    defences = {"r": ResamplingPreprocessor(device_type="cpu")}
    table = evaluate(tiny_model, defences, images, labels, threats=("transfer",), attack=AttackSpec("fgsm"),
                     cache_dir=tmp_path, source=source, source_name="other")
    assert [r.defence for r in table.rows] == ["none", "r"] and "other" in table.rows[0].note
    torch.manual_seed(6)
    evaluate(tiny_model, defences, images, labels, threats=("transfer",), attack=AttackSpec("fgsm"),
             cache_dir=tmp_path, source=TinyCNN().eval())
    assert len(list(tmp_path.glob("*.npz"))) == 2
    with pytest.raises(ValueError, match="needs a source"):
        evaluate(tiny_model, defences, images, labels, threats=("transfer",))
