#!/usr/bin/env bash
# The wheels that the GPU machine lacks, for its Python 3.12 (it reaches no package registry), and the command that
# runs benchmarks/gpu.py there. Run it here, on a machine where pip reaches a registry, from anywhere in the checkout:
#
#     bash benchmarks/gpu_wheels.sh
#
# It downloads the wheels into .whl/ at the repository's root (ignored through .git/info/exclude, never committed),
# checks that every requirement of the package and of the wheels is either a wheel in .whl/ or a package of the GPU
# machine's image (the list below, as the GPU machines' package list read on 2026-11-17 has them), and prints the command
# to give the device tool, with carry [".whl"] and timeout_s 600 (docs/gpu.md).
set -euo pipefail

root=$(git rev-parse --show-toplevel)
cd "$root"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"

# What the image lacks of the package's runtime dependencies (pyproject.toml): ART and multiprocess (with dill, its
# own requirement). The versions are the newest tested ones (docs/installation.md).
WHEELS=(adversarial-robustness-toolbox==1.20.1 multiprocess==0.70.19 dill==0.4.1)
rm -rf .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"

# Completeness: every requirement (no extras) of pyproject.toml and of each wheel is a carried wheel or on the image.
python3 - <<'EOF'
import re
import sys
import tomllib
import zipfile
from pathlib import Path

IMAGE = {"numpy", "scipy", "scikit-learn", "six", "setuptools", "tqdm", "torch", "torchvision", "timm",
         "safetensors", "packaging", "matplotlib", "pytest"}
#: Imported without being declared: ART 1.20.1 imports packaging (seen in a fresh Python 3.12 environment).
UNDECLARED = {"packaging": "adversarial-robustness-toolbox"}


def name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ (]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


wheels = {name(path.name.split("-")[0]): path for path in Path(".whl").glob("*.whl")}
needed = {name(r): "pyproject.toml" for r in tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]}
needed.update(UNDECLARED)
for wheel, path in wheels.items():
    with zipfile.ZipFile(path) as archive:
        metadata = next(archive.read(n).decode() for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            needed.setdefault(name(line.removeprefix("Requires-Dist:")), wheel)
missing = sorted(f"{n} (needed by {by})" for n, by in needed.items() if n not in wheels and n not in IMAGE)
if missing:
    sys.exit("Missing from .whl and from the GPU image: " + ", ".join(missing))
print(f"Wheel set complete: {sorted(wheels)} carried; {sorted(set(needed) - set(wheels))} on the image.")
EOF

commit=$(git rev-parse HEAD)
git diff --quiet HEAD -- . ':!.whl' || commit="$commit+dirty"
cat <<EOF

Device tool: run with carry [".whl"], timeout_s 600 and this command (one line):

set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=\$PWD:/tmp/site PYTHONUNBUFFERED=1 || exit; nvidia-smi; python3 benchmarks/gpu.py --out \$OUT/gpu.json --commit $commit 2>&1 | tee \$OUT/gpu.log
EOF
