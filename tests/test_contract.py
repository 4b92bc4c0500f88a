"""The ART contract every defence must honour (defences join via ``defences_under_contract.CASES``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.attacks.evasion import (
    AutoAttack,
    AutoProjectedGradientDescent,
    HopSkipJump,
    ProjectedGradientDescent,
    SquareAttack,
)
from art.defences.preprocessor import FeatureSqueezing, JpegCompression
from art.preprocessing.expectation_over_transformation import EoTGaussianNoisePyTorch, EoTImageRotationPyTorch
from art.preprocessing.standardisation_mean_std import StandardisationMeanStd
from conftest import make_classifier
from defences_under_contract import CASE_MODE_IDS, CASE_MODES, CASES, DEPLOY_MODE_IDS, DEPLOY_MODES
from torch import nn

from art_purifiers.defences.art import ARTPreprocessor
from art_purifiers.deploy import DefenceChain, Deployment, EOTClassifier

CASE_IDS = [case.name for case in CASES]
EPS = 8 / 255
#: CIFAR-10's per-channel mean and standard deviation, shaped to broadcast over (N, 3, H, W).
MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(3, 1, 1)


def build(case, mode, **overrides):
    kwargs = {"gradient": mode, "seed": 0, "device_type": "cpu", **overrides}
    return case.factory(**kwargs)


def one_hot(labels):
    return np.eye(10, dtype=np.float32)[labels]


def manual_loss_gradient(defence, model, x, y):
    xt = torch.from_numpy(x).requires_grad_(True)
    loss = nn.CrossEntropyLoss()(model(defence.forward(xt)[0]), torch.from_numpy(y))
    loss.backward()
    return xt.grad.numpy()


def standardising_classifier(model, defences, preprocessing):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                             clip_values=(0.0, 1.0), preprocessing_defences=defences, preprocessing=preprocessing,
                             device_type="cpu")


@pytest.mark.parametrize(("case", "mode"), CASE_MODES, ids=CASE_MODE_IDS)
class TestGradients:
    def test_predict_shape_and_dtype(self, case, mode, tiny_model, images):
        classifier = make_classifier(tiny_model, [build(case, mode)])
        predictions = classifier.predict(images)
        assert predictions.shape == (len(images), 10)
        assert predictions.dtype == np.float32
        purified, _ = build(case, mode)(images)
        assert purified.shape == images.shape and purified.dtype == np.float32

    def test_predict_equals_model_on_purified(self, case, mode, tiny_model, images):
        defence = build(case, mode)
        purified, _ = defence(images)
        with torch.no_grad():
            expected = tiny_model(torch.from_numpy(purified)).numpy()
        np.testing.assert_allclose(make_classifier(tiny_model, [defence]).predict(images), expected, atol=1e-5)

    def test_loss_gradient(self, case, mode, tiny_model, images, labels):
        defence = build(case, mode)
        gradient = make_classifier(tiny_model, [defence]).loss_gradient(images, one_hot(labels))
        assert gradient.shape == images.shape and np.abs(gradient).sum() > 0
        if mode != "bpda":  # "exact", or DIP's "full": autograd through forward
            expected = manual_loss_gradient(defence, tiny_model, images, labels)
        else:  # BPDA: the bare classifier's gradient at the purified point.
            purified, _ = defence(images)
            expected = make_classifier(tiny_model).loss_gradient(purified, one_hot(labels))
        np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-7)

    def test_numpy_gradient_path_agrees(self, case, mode, tiny_model, images, labels):
        """``estimate_gradient`` / ``_apply_preprocessing_gradient`` (numpy path) == autograd through forward."""
        defence = build(case, mode)
        rng = np.random.default_rng(1)
        upstream = rng.normal(size=images.shape).astype(np.float32)
        xt = torch.from_numpy(images).requires_grad_(True)
        defence.forward(xt)[0].backward(torch.from_numpy(upstream))
        np.testing.assert_allclose(defence.estimate_gradient(images, upstream), xt.grad.numpy(), rtol=1e-5, atol=1e-7)
        classifier = make_classifier(tiny_model, [defence])
        via_chain = classifier._apply_preprocessing_gradient(images, upstream)
        # The chain also holds ART's standardisation (mean 0, std 1), so the gradient is unchanged.
        np.testing.assert_allclose(via_chain, xt.grad.numpy(), rtol=1e-5, atol=1e-7)

    def test_art_eot_refused_with_pointer_to_deploy_eot(self, case, mode, tiny_model):
        """ART's EoT preprocessors return N x k rows, which AutoAttack, HopSkipJump and PGD without labels cannot
        handle (docs/evaluating.md): the deployment and the EOT model refuse them and name ``deploy(victim, eot=k)``."""
        for eot in (EoTGaussianNoisePyTorch(nb_samples=2, clip_values=(0.0, 1.0), std=0.02, apply_predict=True),
                    EoTImageRotationPyTorch(nb_samples=2, angles=10.0, clip_values=(0.0, 1.0), apply_predict=True)):
            with pytest.raises(ValueError, match=r"deploy\(victim, eot=k\)"):
                Deployment(tiny_model, [build(case, mode), eot]).classifier()
            with pytest.raises(ValueError, match=type(eot).__name__):
                EOTClassifier(tiny_model, [build(case, mode), eot], draws=2)

    @pytest.mark.parametrize("standardisation", ["numpy", "pytorch"])
    def test_standardisation_chain_gradients(self, case, mode, standardisation, tiny_model, images, labels):
        """Ours + ART's mean/std standardisation: ``preprocessing=(mean, std)`` becomes ART's PyTorch
        standardisation (all-PyTorch path); a ``StandardisationMeanStd`` object stays numpy, which ART accepts as
        the one mixed chain it supports (``__call__`` for values, ``estimate_gradient`` for gradients). Both give
        the predictions and gradients of autograd through ``forward``, then the standardisation, then the model."""
        defence = build(case, mode)
        preprocessing = StandardisationMeanStd(MEAN, STD) if standardisation == "numpy" else (MEAN, STD)
        classifier = standardising_classifier(tiny_model, [defence], preprocessing)
        assert classifier.all_framework_preprocessing is (standardisation == "pytorch")
        xt = torch.from_numpy(images).requires_grad_(True)
        logits = tiny_model((defence.forward(xt)[0] - torch.from_numpy(MEAN)) / torch.from_numpy(STD))
        nn.CrossEntropyLoss()(logits, torch.from_numpy(labels)).backward()
        np.testing.assert_allclose(classifier.predict(images), logits.detach().numpy(), atol=1e-5)
        gradient = classifier.loss_gradient(images, one_hot(labels))
        assert gradient.dtype == np.float32 and np.abs(gradient).sum() > 0
        np.testing.assert_allclose(gradient, xt.grad.numpy(), rtol=1e-4, atol=1e-7)

    def test_chain_with_art_jpeg_wrapper(self, case, mode, tiny_model, images, labels):
        """ART's JPEG as :class:`ARTPreprocessor` chains with ours on the PyTorch path, in either order, directly
        in a ``PyTorchClassifier`` or as a :class:`DefenceChain`; BPDA passes the gradient through the JPEG."""
        for first_jpeg in (True, False):
            jpeg = ARTPreprocessor("JpegCompression", options={"quality": 75}, device_type="cpu")
            ours = build(case, mode)
            chain = [jpeg, ours] if first_jpeg else [ours, jpeg]
            direct = make_classifier(tiny_model, chain)
            deployed = DefenceChain(chain).deploy(tiny_model).classifier()
            assert direct.all_framework_preprocessing and deployed.all_framework_preprocessing
            xt = torch.from_numpy(images).requires_grad_(True)
            out = xt
            for step in chain:
                out, _ = step.forward(out)
            logits = tiny_model(out)
            nn.CrossEntropyLoss()(logits, torch.from_numpy(labels)).backward()
            for classifier in (direct, deployed):
                np.testing.assert_allclose(classifier.predict(images), logits.detach().numpy(), atol=1e-5)
                gradient = classifier.loss_gradient(images, one_hot(labels))
                np.testing.assert_allclose(gradient, xt.grad.numpy(), rtol=1e-4, atol=1e-7)
                assert np.abs(gradient).sum() > 0

    @pytest.mark.parametrize("numpy_defence", ["JpegCompression", "FeatureSqueezing"])
    def test_raw_art_numpy_defence_in_chain_is_refused_by_art(self, case, mode, numpy_defence, tiny_model, images,
                                                              labels):
        """ART itself refuses a numpy-only defence chained with a PyTorch one (ART issue #1888), in either order;
        docs/evaluating.md points to ARTPreprocessor. If ART ever accepts it, this fails and the docs need updating."""
        raw = (JpegCompression(clip_values=(0.0, 1.0), quality=75, channels_first=True) if numpy_defence ==
               "JpegCompression" else FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=4))
        for chain in ([raw, build(case, mode)], [build(case, mode), raw]):
            classifier = make_classifier(tiny_model, chain)
            with pytest.raises(NotImplementedError, match="combination of preprocessing types is not supported"):
                classifier.predict(images)
            with pytest.raises(NotImplementedError, match="combination of preprocessing types is not supported"):
                classifier.loss_gradient(images, one_hot(labels))

    def test_pgd_end_to_end(self, case, mode, tiny_model, images, labels):
        classifier = make_classifier(tiny_model, [build(case, mode)])
        attack = ProjectedGradientDescent(classifier, eps=EPS, eps_step=2 / 255, max_iter=5, verbose=False)
        adversarial = attack.generate(images, y=labels)
        assert adversarial.dtype == np.float32
        assert np.abs(adversarial - images).max() <= EPS + 1e-6
        assert not np.allclose(adversarial, images)

    def test_float64_input(self, case, mode, tiny_model, images, labels):
        classifier = make_classifier(tiny_model, [build(case, mode)])
        x64 = images.astype(np.float64)
        np.testing.assert_allclose(classifier.predict(x64), classifier.predict(images), atol=1e-5)
        assert classifier.loss_gradient(x64, one_hot(labels)).shape == images.shape
        purified, _ = build(case, mode)(x64)
        assert purified.dtype == np.float32


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
class TestAttacksAndChecks:
    def test_short_autoattack(self, case, tiny_model, images, labels):
        classifier = make_classifier(tiny_model, [build(case, case.gradients[0])])
        attacks = [
            AutoProjectedGradientDescent(classifier, eps=EPS, eps_step=2 / 255, max_iter=3, nb_random_init=1,
                                         batch_size=4, verbose=False),
            SquareAttack(classifier, eps=EPS, max_iter=10, nb_restarts=1, batch_size=4, verbose=False),
        ]
        adversarial = AutoAttack(classifier, eps=EPS, eps_step=2 / 255, attacks=attacks, batch_size=4).generate(
            images, y=labels
        )
        assert adversarial.shape == images.shape
        assert np.abs(adversarial - images).max() <= EPS * (1 + 1e-4) + 1e-6

    def test_hopskipjump_end_to_end(self, case, tiny_model, images):
        classifier = make_classifier(tiny_model, [build(case, case.gradients[0])])
        attack = HopSkipJump(classifier, max_iter=2, max_eval=30, init_eval=5, init_size=20, verbose=False)
        adversarial = attack.generate(images[:2])
        assert adversarial.shape == images[:2].shape and adversarial.dtype == np.float32
        assert np.isfinite(adversarial).all()

    @pytest.mark.parametrize(
        ("bad", "message"),
        [
            (lambda x: x[0], "rank 4"),
            (lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "channels-last"),
            (lambda x: x[:, :2], "3 channels"),
            (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x).astype(np.float32), "NaN"),
            (lambda x: x + 2.0, "clip_values"),
            (lambda x: x[:0], "non-empty"),
        ],
        ids=["rank", "channels-last", "channels", "nan", "range", "empty"],
    )
    def test_bad_inputs_raise(self, case, bad, message, images):
        defence = build(case, case.gradients[0])
        with pytest.raises(ValueError, match=message):
            defence(bad(images))

    def test_bad_parameters_raise(self, case):
        with pytest.raises(ValueError, match="gradient"):
            build(case, "surrogate")
        with pytest.raises(ValueError, match="batch_size"):
            build(case, case.gradients[0], batch_size=0)
        with pytest.raises(ValueError, match="channels_first"):
            build(case, case.gradients[0], channels_first=False)
        defence = build(case, case.gradients[0])
        with pytest.raises(ValueError, match="clip_values"):
            defence.set_params(clip_values=(1.0, 0.0))

    def test_art_conventions(self, case):
        defence = build(case, case.gradients[0])
        assert defence.apply_fit is False and defence.apply_predict is True
        assert {"gradient", "batch_size", "clip_values", "channels_first", "seed"} <= set(defence.params)

    @pytest.mark.parametrize("defence_device", ["cpu", "gpu"])
    def test_cpu_classifier(self, case, defence_device, tiny_model, images):
        """A defence built for either device works with a CPU classifier (it follows the input's device)."""
        classifier = make_classifier(tiny_model, [build(case, case.gradients[0], device_type=defence_device)])
        assert classifier.predict(images).shape == (len(images), 10)

    def test_batching_bounds_chunks(self, case, images):
        defence = build(case, case.gradients[0], batch_size=3)
        seen = []
        purify = defence.purify
        defence.purify = lambda x, g: (seen.append(len(x)), purify(x, g))[1]
        defence(np.concatenate([images] * 2))
        assert seen == [3, 3, 2]

    def test_seed_determinism(self, case, images):
        first, _ = build(case, case.gradients[0], seed=123)(images)
        second, _ = build(case, case.gradients[0], seed=123)(images)
        defence = build(case, case.gradients[0], seed=123)
        np.testing.assert_array_equal(first, second)
        np.testing.assert_array_equal(defence(images)[0], defence(images)[0])
        if defence.randomized:
            unseeded = build(case, case.gradients[0], seed=None)
            assert not np.array_equal(unseeded(images)[0], unseeded(images)[0])


@pytest.mark.parametrize(("case", "mode"), DEPLOY_MODES, ids=DEPLOY_MODE_IDS)
class TestDeployment:
    """The contract of every deployable defence, preprocessor or model change, through ``Defence.deploy``."""

    def test_predict_equals_deployed_function(self, case, mode, tiny_model, images):
        deployment = build(case, mode).deploy(tiny_model)
        predictions = deployment.classifier().predict(images)
        assert predictions.shape == (len(images), 10) and predictions.dtype == np.float32
        with torch.no_grad():
            expected = deployment.logits(torch.from_numpy(images)).numpy()
        np.testing.assert_allclose(predictions, expected, atol=1e-5)

    def test_loss_gradient_is_autograd_of_deployment(self, case, mode, tiny_model, images, labels):
        """Exact: the true gradient; BPDA: the straight-through estimate built into the deployed function."""
        deployment = build(case, mode).deploy(tiny_model)
        gradient = deployment.classifier().loss_gradient(images, one_hot(labels))
        xt = torch.from_numpy(images).requires_grad_(True)
        nn.CrossEntropyLoss()(deployment.logits(xt), torch.from_numpy(labels)).backward()
        np.testing.assert_allclose(gradient, xt.grad.numpy(), rtol=1e-4, atol=1e-7)
        assert np.abs(gradient).sum() > 0

    def test_pgd_end_to_end(self, case, mode, tiny_model, images, labels):
        classifier = build(case, mode).deploy(tiny_model).classifier()
        attack = ProjectedGradientDescent(classifier, eps=EPS, eps_step=2 / 255, max_iter=3, verbose=False)
        adversarial = attack.generate(images, y=labels)
        assert adversarial.dtype == np.float32 and np.abs(adversarial - images).max() <= EPS + 1e-6

    def test_configured_and_fingerprint(self, case, mode):
        defence = build(case, mode)
        assert defence.fingerprint() == build(case, mode).fingerprint()
        other = "exact" if mode == "bpda" else "bpda"
        if other in case.gradients:
            changed = defence.configured(gradient=other)
            assert changed.gradient == other and defence.gradient == mode
            assert changed.fingerprint() != defence.fingerprint()
        with pytest.raises(ValueError, match=r"has no parameter\(s\) \['not_a_parameter'\]; its parameters: \["):
            defence.configured(not_a_parameter=1)

    def test_eot_deployment_runs_art_attacks(self, case, mode, tiny_model, images, labels):
        """``deploy(victim, eot=k)``: one row per image, and PGD with and without labels run; on a random defence
        ART's AutoAttack and HopSkipJump run too."""
        defence = build(case, mode)
        defence = defence.configured(seed=None) if "seed" in defence.params else defence
        classifier = defence.deploy(tiny_model, eot=2).classifier()
        assert classifier.predict(images).shape == (len(images), 10)
        pgd = ProjectedGradientDescent(classifier, eps=EPS, eps_step=2 / 255, max_iter=2, verbose=False)
        for adversarial in (pgd.generate(images), pgd.generate(images, y=labels)):
            assert adversarial.shape == images.shape and adversarial.dtype == np.float32
            assert np.abs(adversarial - images).max() <= EPS + 1e-6
        if not defence.randomized:
            return
        apgd = AutoProjectedGradientDescent(classifier, eps=EPS, eps_step=2 / 255, max_iter=2, nb_random_init=1,
                                            batch_size=4, verbose=False)
        adversarial = AutoAttack(classifier, eps=EPS, attacks=[apgd], batch_size=4).generate(images, y=labels)
        assert np.abs(adversarial - images).max() <= EPS * (1 + 1e-4) + 1e-6
        hsj = HopSkipJump(classifier, max_iter=1, max_eval=10, init_eval=5, init_size=10, verbose=False)
        assert hsj.generate(images[:2]).shape == images[:2].shape


def test_contract_covers_random_defences():
    """The EOT tests above run AutoAttack and HopSkipJump only on random defences: keep some in the suite."""
    randomized = [case.name for case, mode in DEPLOY_MODES if build(case, mode).randomized]
    assert {"resampling-bilinear-variant", "irad-variant", "dip", "art-total-variation"} <= set(randomized)


def test_art_eot_in_own_classifier_still_breaks_label_free_attacks(tiny_model, images, labels):
    """The documented limit for users who build ``PyTorchClassifier`` themselves with ART's EoT preprocessors:
    ``predict`` gives N x k rows, which PGD without labels and AutoAttack reject. If a new ART handles it, this fails
    and docs/evaluating.md ("ART's EoT preprocessors") needs updating."""
    from art_purifiers import ResamplingPreprocessor

    eot = EoTGaussianNoisePyTorch(nb_samples=2, clip_values=(0.0, 1.0), std=0.02, apply_predict=True)
    classifier = make_classifier(tiny_model, [ResamplingPreprocessor(sampler="variant", device_type="cpu"), eot])
    assert classifier.predict(images).shape == (2 * len(images), 10)  # the limit, not a contract
    with pytest.raises(AssertionError, match="Size mismatch"):
        ProjectedGradientDescent(classifier, eps=EPS, eps_step=2 / 255, max_iter=1, verbose=False).generate(images)
    apgd = AutoProjectedGradientDescent(classifier, eps=EPS, max_iter=1, nb_random_init=1, verbose=False)
    with pytest.raises(ValueError, match="broadcast"):
        AutoAttack(classifier, eps=EPS, attacks=[apgd]).generate(images, y=labels)
