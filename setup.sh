#!/usr/bin/env bash
# Installs what the harness needs on a fresh machine (no internet needed beyond PyPI and
# Debian's package mirror): torch + torchvision, this package with its dependencies, the
# Fashion-MNIST files (Debian's dataset-fashion-mnist) and Chromium for the report test.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

# torch 2.14.1 / torchvision 0.29.1 are the releases this project is tested with (they
# install from local disk here); skip the 5 GB step when a matching pair is importable.
if ! $PY -c 'import torch, torchvision, sys; sys.exit(0 if torch.__version__.startswith("2.14.1") and torchvision.__version__.startswith("0.29.1") else 1)' 2>/dev/null; then
    $PY -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
$PY -m pip install -q -e '.[dev,ray,timm,deploy]'
# AutoAttack comes from torchattacks, which pins requests~=2.25.1 (an old release with known
# security fixes missing) although it never imports requests: installed without its pins, its
# real requirements (torch, torchvision, scipy, tqdm, numpy) being the harness's own.
$PY -m pip install -q --no-deps torchattacks==3.5.1

need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
echo "setup complete: $($PY -c 'import torch; print("torch", torch.__version__)')"
