"""Shared fixtures: a tiny CNN classifier and small CIFAR-shaped batches (no data download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO_ROOT.parent / "shared" / "data" / "cifar10"
SHARED_WEIGHTS = REPO_ROOT.parent / "shared" / "data" / "weights" / "akamaster_pytorch_resnet_cifar10"

needs_shared_data = pytest.mark.skipif(not SHARED_CIFAR10.is_dir(), reason="../shared/data is not available")


class TinyCNN(nn.Module):
    """A 3x32x32 -> 10 CNN small enough for attack tests on 2 CPU cores, with timm's encoder/head split
    (a 64-dimensional embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(64, 10)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        embedding = nn.functional.adaptive_avg_pool2d(features, 2).flatten(1)
        return embedding if pre_logits else self.head(embedding)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: bitwise equality and batch independence are promised for one (several may
    split products differently)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def images() -> np.ndarray:
    """Four smooth random images (3x32x32, float32, in [0, 1])."""
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 1, size=(4, 3, 8, 8)).astype(np.float32)
    return np.kron(coarse, np.ones((1, 1, 4, 4), dtype=np.float32))


@pytest.fixture
def labels(images, tiny_model) -> np.ndarray:
    with torch.no_grad():
        return tiny_model(torch.from_numpy(images)).argmax(1).numpy()


def make_classifier(model: nn.Module, defences=None, device_type: str = "cpu"):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(3, 32, 32),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        preprocessing_defences=defences,
        device_type=device_type,
    )
