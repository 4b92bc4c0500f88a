"""Evaluation axes as data (settings, presets), test-time protocols for random defences, and EOT draws batched into
one forward."""

import numpy as np
import pytest
import torch
from torch import nn

from art_purifiers import ResamplingPreprocessor
from art_purifiers.base import PurifierPreprocessor
from art_purifiers.deploy import EOTClassifier
from art_purifiers.evaluation import (
    PRESETS,
    AttackSpec,
    DataSlice,
    EvaluationSettings,
    ThreatModel,
    draw_labels,
    evaluate,
    preset,
    protocol_correct,
    threat_model,
)

# ------------------------------------------------------------------------------------------------------------------
# A random defence whose draws are known: the row r of each call (draw-major copies of the images) is replaced by a
# plain image of class 9 when r % 3 == 0; the victim reads the class from the mean pixel value.
# ------------------------------------------------------------------------------------------------------------------


class MeanVictim(nn.Module):
    """Class k for an image of mean (k + 0.5) / 10."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x.mean(dim=(1, 2, 3)) * 10
        return -((level[:, None] - (torch.arange(10, dtype=x.dtype) + 0.5)) ** 2)


class EveryThirdRow(PurifierPreprocessor):
    randomized = True

    def purify(self, x, generator):
        corrupted = torch.arange(len(x)) % 3 == 0
        return torch.where(corrupted[:, None, None, None], torch.full_like(x, 0.95), x)


@pytest.fixture
def plain_images():
    labels = np.array([1, 2, 3, 4, 5])
    return np.repeat((labels + 0.5) / 10, 3 * 8 * 8).reshape(5, 3, 8, 8).astype(np.float32), labels


def test_presets_are_todays_threat_models():
    assert PRESETS["oblivious"] == ThreatModel("oblivious", "victim")
    assert PRESETS["eot"] == ThreatModel("eot", "defence", "own", eot=True)
    assert PRESETS["decision"].gradient == "labels"
    assert threat_model("eot", gradient="bpda") == ThreatModel("eot", "defence", "bpda", eot=True)
    # A preset keeps its name alone in cache keys; a changed one adds its axes, so the two never share examples.
    assert PRESETS["bpda"].key_parts() == ("bpda",)
    assert len(threat_model("eot", gradient="bpda").key_parts()) == 2
    settings = preset("clean", "eot", eot_draws=4, gradient="bpda", protocols=("worst",))
    assert [t.gradient for t in settings.threats] == [None, "bpda"]  # the axis changes the attacking models only
    assert settings.protocols == ("single", "worst") and settings.extra_protocols == ("worst",)
    assert EvaluationSettings(threats=("clean", "adaptive")).threats[1] == PRESETS["adaptive"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ThreatModel("", "victim"), "name"),
    (lambda: ThreatModel("x", "moon"), "crafted_on"),
    (lambda: ThreatModel("x", "defence", "sideways"), "gradient"),
    (lambda: ThreatModel("x", "victim", "bpda"), "gradient"),
    (lambda: ThreatModel("x", "defence", "exact", eot=1), "eot"),
    (lambda: ThreatModel("x", "source", eot=True), "eot"),
    (lambda: threat_model("telepathy"), "Unknown threat"),
    (lambda: threat_model("eot", draws=3), "axis"),
    (lambda: preset("eot", eot_draw=3), "no field"),
    (lambda: preset("eot", threats=("clean",)), "positional"),
    (lambda: EvaluationSettings(eot_draws=0), "eot_draws"),
    (lambda: EvaluationSettings(queries=0), "queries"),
    (lambda: EvaluationSettings(protocol_draws=1), "protocol_draws"),
    (lambda: EvaluationSettings(protocol_draws=2.5), "protocol_draws"),
    (lambda: EvaluationSettings(draws_per_forward=0), "draws_per_forward"),
    (lambda: EvaluationSettings(protocols=("best",)), "protocol"),
    (lambda: EvaluationSettings(deployment_seeds=(0, 0)), "distinct"),
    (lambda: EvaluationSettings(deployment_seeds=()), "distinct"),
    (lambda: EvaluationSettings(deployment_seeds=(-1,)), "deployment seed"),
    (lambda: EvaluationSettings(deployment_seeds="012"), "sequence"),
    (lambda: EvaluationSettings(seed=-1), "seed"),
    (lambda: EvaluationSettings(batch_size=0), "batch_size"),
    (lambda: EvaluationSettings(device="tpu"), "device"),
    (lambda: EvaluationSettings(verbose="yes"), "verbose"),
    (lambda: EvaluationSettings(cache_dir=3), "cache_dir"),
    (lambda: EvaluationSettings(victim_name=3), "victim_name"),
    (lambda: EvaluationSettings(data="test 0..9"), "DataSlice"),
    (lambda: EvaluationSettings(threats=("clean", PRESETS["clean"])), "distinct"),
    (lambda: EvaluationSettings(threats=(3,)), "ThreatModel"),
    (lambda: EvaluationSettings(attacks=()), "AttackSpec"),
    (lambda: EvaluationSettings(attacks=("pgd",)), "AttackSpec"),
    (lambda: DataSlice(""), "source"),
    (lambda: DataSlice("here", split="validation"), "split"),
    (lambda: DataSlice("here", first=-1), "first"),
    (lambda: DataSlice("here", shard=(2, 2)), "shard"),
    (lambda: AttackSpec("hopskipjump", queries=0), "queries"),
    (lambda: EOTClassifier(MeanVictim(), [], draws=2, draws_per_forward=0), "draws_per_forward"),
])
def test_bad_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_settings_and_keywords_are_exclusive(tiny_model, images, labels):
    with pytest.raises(ValueError, match="not both"):
        evaluate(tiny_model, {}, images, labels, EvaluationSettings(), seed=1)
    with pytest.raises(ValueError, match="EvaluationSettings"):
        evaluate(tiny_model, {}, images, labels, {"threats": ("clean",)})


def test_keyword_form_equals_settings(tiny_model, images, labels):
    defences = {"r": ResamplingPreprocessor(device_type="cpu")}
    old = evaluate(tiny_model, defences, images, labels, threats=("oblivious", "clean"), attack=AttackSpec("fgsm"))
    new = evaluate(tiny_model, defences, images, labels, preset("clean", "oblivious", attacks=(AttackSpec("fgsm"),)))
    def without_times(table):
        return [(r.key, r.sa_correct, r.ra_correct, r.note, r.attack_params) for r in table.rows], table.meta

    assert without_times(old) == without_times(new)
    assert [r.threat for r in old.rows][:2] == ["clean", "clean"]  # presets in their usual order


def test_protocol_counts_by_hand():
    y = np.array([0, 1, 2])
    labels = np.array([[0, 1, 5], [0, 7, 5], [3, 1, 2], [0, 7, 2]])  # 4 draws of 3 images
    assert protocol_correct(labels, y, "single").tolist() == [True, True, False]
    assert protocol_correct(labels, y, "worst").tolist() == [False, False, False]
    # Image 0: 3 votes of 4; image 1: 2 against 2 for label 7, a tie, wrong; image 2: 2 against 2 for 5, wrong.
    assert protocol_correct(labels, y, "majority").tolist() == [True, False, False]
    assert protocol_correct(labels[:3], y, "majority").tolist() == [True, True, False]


@pytest.mark.parametrize(("per_forward", "seeds", "majority", "mean"), [(None, (5,), 3, 65.0), (2, (5, 6), 1, 60.0)])
def test_protocols_on_a_defence_with_known_draws(plain_images, per_forward, seeds, majority, mean):
    # 4 draws of 5 images. In one forward (rows 0..19), rows 0, 3, 6, 9, 12, 15, 18 are corrupted: images 0 and 3 in
    # two draws (a tie: wrong under majority), 1, 2 and 4 in one. Two draws per forward (rows 0..9 twice): images
    # 0, 1, 3, 4 in two draws of four, image 2 never.
    x, y = plain_images
    fgsm = AttackSpec("fgsm", eps=1e-6)
    settings = preset("clean", "oblivious", attacks=(fgsm,), protocols=("majority", "worst"), protocol_draws=4,
                      draws_per_forward=per_forward)
    table = evaluate(MeanVictim(), {"toy": EveryThirdRow(device_type="cpu", seed=5)}, x, y, settings)
    rows = {(r.threat, r.attack): r for r in table.rows if r.defence == "toy"}
    for threat, label in (("clean", "-"), ("oblivious", fgsm.label())):
        assert rows[(threat, label)].sa_correct == 3  # one call of 5 rows: images 0 and 3 corrupted
        prefix = "" if threat == "clean" else f"{label} ["
        suffix = "" if threat == "clean" else "]"
        worst, vote = (rows[(threat, f"{prefix}{name} of 4{suffix}")] for name in ("worst", "majority"))
        assert (worst.sa_correct, vote.sa_correct) == (1 if per_forward else 0, majority)
        assert worst.attack_params["protocol_seeds"] == seeds and worst.attack_params["protocol_draws"] == 4
        assert worst.attack_params["mean_single_draw_sa"] == mean
        if threat == "oblivious":  # the perturbation changes no label: RA counts as SA, each draw judged twice
            assert (worst.ra_correct, vote.ra_correct) == (worst.sa_correct, majority)
            assert worst.attack_params["mean_single_draw_ra"] == mean
        # Worst case never above the mean single draw.
        assert 100 * worst.sa_correct / 5 <= worst.attack_params["mean_single_draw_sa"]
        assert "seeds 5" in worst.note and "4 draws" in worst.note
    assert table.meta["protocols"] == ["single", "majority", "worst"] and table.meta["protocol_draws"] == 4
    assert not [r for r in table.rows if r.defence == "none" and "of 4" in r.attack]  # no draws for the bare victim


def test_reading_compares_single_draw_rows():
    from art_purifiers.evaluation import ResultRow, ResultTable

    def row(threat, attack, ra, params):
        return ResultRow.from_counts("d", threat, attack, 10, ra, 10, 1.0, "", {}, params)

    table = ResultTable([row("oblivious", "pgd", 5, {}), row("bpda", "pgd", 4, {}),
                         row("bpda", "pgd [worst of 4]", 1, {"protocol": "worst"})])
    assert "d 50.0% oblivious -> 40.0% bpda" in table.reading()


def test_draws_of_an_unseeded_defence_are_fresh(tiny_model, images):
    draws = draw_labels(ResamplingPreprocessor(sampler="variant", magnitude=1.0, device_type="cpu"), tiny_model,
                        images, draws=3, draws_per_forward=2)
    assert draws.labels.shape == (3, len(images)) and draws.seeds is None and draws.draws_per_forward == 2


def test_deployment_seeds_axis_names_rows_and_attacks_once(tiny_model, images, labels, monkeypatch):
    calls = []
    original = AttackSpec.build

    def counted(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AttackSpec, "build", counted)
    defences = {"v:magnitude=0.5": ResamplingPreprocessor(sampler="variant", magnitude=0.5, device_type="cpu"),
                "fixed": ResamplingPreprocessor(device_type="cpu")}
    table = evaluate(tiny_model, defences, images, labels,
                     preset("bpda", attacks=(AttackSpec("pgd", steps=1),), deployment_seeds=(0, 3)))
    assert [r.defence for r in table.rows] == ["v:magnitude=0.5,seed=0", "v:magnitude=0.5,seed=3", "fixed"]
    assert [r.defence_params["seed"] for r in table.rows[:2]] == [0, 3]
    assert len(calls) == 2  # once for the random defence (the seeds share its examples), once for the fixed one
    assert table.meta["deployment_seeds"] == [0, 3]


def test_hopskipjump_is_an_attack_spec_of_any_threat_model(tiny_model, images, labels):
    spec = AttackSpec("hopskipjump", norm="2", eps=2.0, queries=40, extra={"init_eval": 5, "init_size": 10})
    assert spec.settings() == {"name": "hopskipjump", "norm": "2", "eps": 2.0, "queries": 40,
                               "extra": {"init_eval": 5, "init_size": 10}}
    assert AttackSpec("pgd").settings().keys().isdisjoint({"queries"})  # other attacks' keys are unchanged
    table = evaluate(tiny_model, {}, images, labels, preset("oblivious", attacks=(spec,)))
    assert table.rows[0].attack == "hopskipjump-40q L2 eps=2" and table.rows[0].ra is not None


def test_decision_uses_a_given_hopskipjump_spec_for_its_budget(tiny_model, images, labels):
    specs = (AttackSpec("fgsm"), AttackSpec("hopskipjump", queries=30, extra={"init_eval": 5, "init_size": 10}))
    table = evaluate(tiny_model, {"r": ResamplingPreprocessor(device_type="cpu")}, images, labels,
                     preset("decision", attacks=specs))
    assert [r.attack for r in table.rows] == ["hopskipjump-30q Linf eps=8/255"]


def test_custom_threat_model_is_recorded(tiny_model, images, labels):
    bpda_eot = threat_model("eot", name="eot-bpda", gradient="bpda")
    defence = ResamplingPreprocessor(sampler="variant", magnitude=0.5, device_type="cpu")
    table = evaluate(tiny_model, {"v": defence}, images, labels,
                     EvaluationSettings(threats=(bpda_eot,), attacks=(AttackSpec("pgd", steps=1),), eot_draws=2))
    assert table.rows[0].threat == "eot-bpda" and table.rows[0].note.endswith("(bpda)")
    assert table.meta["threat_models"] == {"eot-bpda": {"crafted_on": "defence", "gradient": "bpda", "eot": True}}


def test_data_slice_is_recorded(tiny_model, images, labels):
    table = evaluate(tiny_model, {}, images, labels,
                     preset("clean", data=DataSlice("bundled sample", first=10, shard=(1, 3))))
    assert table.meta["images"] == [10, 13] and table.meta["shard"] == [1, 3]
    assert table.meta["data"] == "bundled sample: CIFAR-10 test images 10..13 (shard 1/3)"


# ------------------------------------------------------------------------------------------------------------------
# EOT draws in one forward equal the draws one after the other.
# ------------------------------------------------------------------------------------------------------------------


class RecordedNoise(PurifierPreprocessor):
    """x + U(0, 0.1) noise, every purified batch recorded."""

    randomized = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.record = []

    def purify(self, x, generator):
        out = x + 0.1 * torch.rand(x.shape, generator=generator).to(x.device)
        self.record.append(out.detach().clone())
        return out


@pytest.mark.parametrize("per_forward", [None, 3, 1])
def test_eot_in_one_forward_equals_sequential_draws(tiny_model, images, per_forward):
    x = torch.from_numpy(0.2 + 0.6 * images).requires_grad_(True)
    y = torch.arange(len(images)) % 10
    noise = RecordedNoise(device_type="cpu")
    eot = EOTClassifier(tiny_model, noise, draws=4, draws_per_forward=per_forward)
    loss = nn.functional.cross_entropy(eot(x), y)
    (gradient,) = torch.autograd.grad(loss, x)
    assert len(noise.record) == (1 if per_forward is None else -(-4 // per_forward))
    # Each call holds its draws image by image: (n, draws in the call, C, H, W), joined along the draws.
    calls = [r.view(len(images), -1, *images.shape[1:]) for r in noise.record]
    purified = torch.cat(calls, dim=1)
    assert purified.shape[1] == 4
    # The same draws one at a time: logits of each draw through the victim, averaged; the gradient through x + noise.
    x_again = x.detach().clone().requires_grad_(True)
    logits = sum(tiny_model(x_again + (purified[:, k] - x.detach())) for k in range(4)) / 4
    (expected,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y), x_again)
    torch.testing.assert_close(eot(x.detach()).shape, logits.shape)
    torch.testing.assert_close(gradient, expected, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        noise.record.clear()
        value = eot(x.detach())
        calls = [r.view(len(images), -1, *images.shape[1:]) for r in noise.record]
        draws = torch.cat(calls, dim=1)
        torch.testing.assert_close(value, sum(tiny_model(draws[:, k]) for k in range(4)) / 4, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# Command line: the new axes' flags.
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["--protocol-draws", "1"], "--protocol-draws must be an integer in"),
    (["--draws-per-forward", "0"], "--draws-per-forward must be an integer in"),
    (["--deployment-seeds", "-1"], "--deployment-seeds must be an integer in"),
    (["--deployment-seeds", "1", "1"], "--deployment-seeds must be distinct"),
], ids=["protocol-draws-one", "draws-per-forward-zero", "deployment-seed-negative", "deployment-seeds-twice"])
def test_bad_axis_arguments(capsys, argv, message):
    from art_purifiers.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--quiet", "--no-cache", *argv])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and message in error


def test_cli_protocol_rows(tmp_path, capsys):
    import json

    from art_purifiers.cli import main

    out = tmp_path / "table.json"
    assert main(["evaluate", "--n", "4", "--attack", "fgsm", "--threat", "clean", "oblivious", "--defence",
                 "resampling:sampler=variant", "--deployment-seeds", "2", "--protocol", "worst", "majority",
                 "--protocol-draws", "3", "--no-cache", "--quiet", "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    rows = [(r["defence"], r["threat"], r["attack"]) for r in table["rows"]]
    assert ("resampling:sampler=variant,seed=2", "clean", "worst of 3") in rows
    assert ("resampling:sampler=variant,seed=2", "oblivious", "fgsm Linf eps=8/255 [majority of 3]") in rows
    assert table["meta"]["protocol_draws"] == 3 and table["meta"]["images"] == [0, 3]
    assert "seeds 2" in capsys.readouterr().out
