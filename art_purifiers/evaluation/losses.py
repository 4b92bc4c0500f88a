"""Attack objectives as torch losses, and ART classifiers that carry them (ART takes gradients of its loss)."""

from __future__ import annotations

import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_purifiers.deploy import art_estimator


class CWMarginLoss(nn.Module):
    """Carlini & Wagner's margin ``min(max_{j != y} z_j - z_y, kappa)``, averaged; maximised by the attack."""

    def __init__(self, kappa: float = 50.0) -> None:
        super().__init__()
        self.kappa = kappa
        self.reduction = "mean"

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim == 2:  # ART passes one-hot labels to losses other than CrossEntropyLoss
            labels = labels.argmax(1)
        labels = labels.long()
        true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
        other = logits.masked_fill(nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
        return (other - true).clamp(max=self.kappa).mean()


def with_loss(classifier: PyTorchClassifier, loss: nn.Module) -> PyTorchClassifier:
    """The same classifier (model, defences, preprocessing, device: ``cuda:N`` stays ``cuda:N``) with another
    training loss."""
    return art_estimator(
        PyTorchClassifier,
        classifier.device,
        model=classifier.model,
        loss=loss,
        input_shape=classifier.input_shape,
        nb_classes=classifier.nb_classes,
        clip_values=classifier.clip_values,
        preprocessing_defences=classifier.preprocessing_defences,
        postprocessing_defences=classifier.postprocessing_defences,
        preprocessing=classifier.preprocessing,
    )


class LogitContrast(nn.Module):
    """``sum_i <c_i, z_i>`` over a batch of logits ``z`` ``(n, K)`` with coefficients ``c`` ``(n, K)``.

    With ``c_i = e_t - e_y`` its input gradient is every point's margin gradient ``grad(z_t - z_y)`` from one
    backward pass (points do not interact), where per-class gradients need one pass per class.
    """

    def forward(self, logits: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        return (logits * coefficients.to(logits.dtype)).sum()
