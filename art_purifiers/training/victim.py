"""Build the shipped victim weights from a reference CIFAR ResNet checkpoint.

The bundled ``resnet20_cifar10.safetensors`` was produced by (one command)::

    art-purifiers convert-victim
        resnet20-12fca82f.th
        art_purifiers/weights/resnet20_cifar10.safetensors
"""

from __future__ import annotations

from pathlib import Path

from art_purifiers.models import cifar_resnet, read_reference_checkpoint
from art_purifiers.models.cifar_resnet import infer_depth
from art_purifiers.weights import save_safetensors


def convert_reference_checkpoint(source: str | Path, destination: str | Path) -> str:
    """Convert a reference ``.th`` CIFAR ResNet checkpoint to safetensors; return the new file's sha256.

    The state dict is loaded into :func:`~art_purifiers.models.cifar_resnet.cifar_resnet` first (strict), so a file
    that would not load as a victim is never written.
    """
    state = read_reference_checkpoint(source)
    depth = infer_depth(state)
    network = cifar_resnet(depth)
    network.load_state_dict(state, strict=True)
    metadata = {"architecture": f"cifar_resnet{depth}", "source": Path(source).name}
    return save_safetensors(network.state_dict(), destination, metadata=metadata)
