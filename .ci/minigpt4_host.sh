#!/usr/bin/env bash
# The MiniGPT-4 host environment of the CI, from scratch, and our package installed into it the
# way the README says (`pip install -c constraints-minigpt4.txt '<source>[indicators]'`).
#
#   bash .ci/minigpt4_host.sh build ENV   # build ENV, install us, assert no host pin changed
#   bash .ci/minigpt4_host.sh test  ENV   # the version-sensitive tests, run by ENV's own pytest
#
# The host recipe and the two MiniGPT-4 checkouts come from shared/hosts/ (../shared beside the
# clone; $IGPT4_HOSTS to override): minigpt4.md, minigpt4-cpu-constraints.txt, minigpt4-head/,
# minigpt4-v1/. torch goes first, from the CPU wheel, with setuptools 80.9.0 (accelerate 0.20.3
# imports pkg_resources); the torchvision op-schema emulation is a .pth of the test environment
# (tests/hostenv/), never part of our package.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
HOSTS=${IGPT4_HOSTS:-$REPO/../shared/hosts}
ACTION=${1:?usage: minigpt4_host.sh build|test ENV}
VENV=${2:?usage: minigpt4_host.sh build|test ENV}
PY="$VENV/bin/python"
say() { echo "ci-host: $*" >&2; }

check_imports() {  # import minigpt4 and train.py --help in both checkouts
    for layout in head v1; do
        (cd "$HOSTS/minigpt4-$layout" && PYTHONDONTWRITEBYTECODE=1 PYTHONWARNINGS=ignore \
            "$PY" -c "import minigpt4" && PYTHONDONTWRITEBYTECODE=1 PYTHONWARNINGS=ignore \
            "$PY" train.py --help >/dev/null) || { say "$1: minigpt4 ($layout) does not import"; exit 1; }
    done
}

same_pins() {  # every line of the host's freeze is still there, unchanged
    local missing
    missing=$(comm -23 <(sort "$1") <(sort "$2"))
    if [ -n "$missing" ]; then
        say "installing changed host pins (before -> missing after):"; echo "$missing" >&2
        say "after:"; comm -13 <(sort "$1") <(sort "$2") >&2; exit 1
    fi
    say "no host pin changed; added: $(comm -13 <(sort "$1") <(sort "$2") | tr '\n' ' ')"
}

build() {
    [ -f "$HOSTS/minigpt4-cpu-constraints.txt" ] || { say "no host recipe at $HOSTS"; exit 1; }
    local started=$SECONDS
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    nice "$PY" -m pip install -q "torch==2.13.0+cpu" "setuptools==80.9.0"
    nice "$PY" -m pip install -q -r "$HOSTS/minigpt4-cpu-constraints.txt"
    local site
    site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    cp tests/hostenv/igpt4_test_torchvision_emulation.py "$site/"
    echo "import igpt4_test_torchvision_emulation" > "$site/igpt4-test-torchvision-emulation.pth"
    check_imports "the host environment alone"
    say "host environment built in $((SECONDS - started)) s"

    # our package, from a copy of the source (pip builds inside the source folder)
    local copy
    copy=$(mktemp -d)/instructiongpt4
    mkdir -p "$copy"
    tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude='*.egg-info' --exclude=./build \
        --exclude=__pycache__ -cf - . | tar -C "$copy" -xf -
    "$PY" -m pip freeze --all > "$VENV/freeze-host.txt"
    # the README's install line ("Use with MiniGPT-4"), as written there
    (cd "$(dirname "$copy")" && export PATH="$VENV/bin:$PATH" &&
        pip install -c instructiongpt4/constraints-minigpt4.txt './instructiongpt4[indicators]' \
        > "$VENV/install.log")
    "$PY" -m pip freeze --all --exclude instructiongpt4 > "$VENV/freeze-installed.txt"
    same_pins "$VENV/freeze-host.txt" "$VENV/freeze-installed.txt"
    # the test tools, under the same constraints: still no host pin may move
    (cd "$(dirname "$copy")" && nice "$VENV/bin/pip" install -q \
        -c instructiongpt4/constraints-minigpt4.txt './instructiongpt4[indicators,test]')
    "$PY" -m pip freeze --all --exclude instructiongpt4 > "$VENV/freeze-tested.txt"
    same_pins "$VENV/freeze-host.txt" "$VENV/freeze-tested.txt"
    "$PY" -m pip check
    check_imports "after installing instructiongpt4"
    rm -rf "$(dirname "$copy")"
    say "host environment with instructiongpt4 ready in $((SECONDS - started)) s: $VENV"
}

run_tests() {
    # the code paths whose libraries differ here (transformers 4.30, tokenizers 0.13, hub 0.18,
    # timm 0.6.13, accelerate 0.20, open_clip 2.32, sentence-transformers 2.2.2), by the host's
    # own interpreter; the checkout tests run from the main suite (IGPT4_MINIGPT4_PYTHON)
    IGPT4_MINIGPT4_PYTHON="$PY" nice "$PY" -m pytest -q -p no:cacheprovider \
        tests/lavis_plugins/test_tiny_model.py tests/selector/scoring/test_features.py tests/selector/scoring/test_reward.py \
        tests/selector/scoring/test_indicators.py tests/selector/core/test_distributed.py tests/project/test_install_pins.py \
        tests/eval_arena/test_eval_testers.py -k "not in_a_checkout"
}

case "$ACTION" in
    build) build ;;
    test) run_tests ;;
    *) say "unknown action $ACTION"; exit 2 ;;
esac
