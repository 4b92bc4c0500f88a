"""Convert a victim's published checkpoint to a victim weight file (safetensors).

Three published layouts are recognised from their keys (:mod:`art_purifiers.models.published`): the reference CIFAR
ResNet-20/32/... checkpoints (``{"state_dict": ...}``, ``module.`` keys), the CIFAR ResNet-18 of DIR's authors (a
DataParallel state dict, ``module.`` keys) and RobustBench's WideResNet-28-10 (``{"state_dict": ...}``, keys maybe
``module.``-prefixed). The file written holds the network's tensors without a prefix and, in its metadata, the
network's spec, ``method: "victim"``, the source file's name and sha256 and the input normalisation the network
expects, so :func:`~art_purifiers.models.load_victim` rebuilds it through
:func:`~art_purifiers.weights.load_networks`::

    art-purifiers convert-victim Standard.pt wrn28_10_standard.safetensors

The bundled ``resnet20_cifar10.safetensors`` and ``resnet32_cifar10.safetensors`` were written by an earlier
version of this command from akamaster's ``resnet20-12fca82f.th`` and ``resnet32-d509ac18.th``; they keep their
bytes (no network spec in their metadata: :mod:`art_purifiers.weights.legacy` reads them). Converting those
checkpoints today gives the same tensors in a file whose metadata says more.
"""

from __future__ import annotations

from pathlib import Path

from art_purifiers.models.published import read_published_victim
from art_purifiers.weights import save_networks, sha256_of


def convert_reference_checkpoint(source: str | Path, destination: str | Path) -> str:
    """Convert a published victim checkpoint (``.th``/``.pt``/``.pth``, read with ``weights_only=True``) to a
    victim ``.safetensors`` file; return the new file's sha256.

    The tensors are loaded into our network first (strict, every published key mapped), so a file that would not
    load as a victim is never written.

    :raises ValueError: An unreadable or refused checkpoint, an unknown layout, or tensors that do not fit it (the
        message names the published keys).
    """
    if Path(destination).suffix != ".safetensors":
        raise ValueError(f"The converted victim must be a .safetensors file, got {str(destination)!r}.")
    network, architecture = read_published_victim(source)
    spec = network.network_spec
    arguments = ", ".join(f"{key}={value}" for key, value in spec["args"].items())
    metadata = {"method": "victim", "architecture": f"{spec['name']}({arguments})",
                "source": Path(source).name, "source_sha256": sha256_of(source),
                "normalization": architecture.normalization}
    return save_networks({"": network}, destination, metadata)
