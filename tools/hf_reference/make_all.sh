#!/usr/bin/env bash
# Rebuilds every tests/fixtures/hf-llava-tiny-*/ fixture. Run from the repository root:
#   tools/hf_reference/make_all.sh PYTHON MAKE_TINY
# PYTHON: a virtualenv's python with requirements.txt installed; MAKE_TINY: the built
# vlcache-make-tiny, whose tokenizer.model (the same for every seed) the checkpoints use.
set -euo pipefail
python=${1:?usage: make_all.sh PYTHON MAKE_TINY}
make_tiny=${2:?usage: make_all.sh PYTHON MAKE_TINY}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$make_tiny" --out "$tmp/tiny" --seed 1 >/dev/null
for spec in llama:new llama:old llama:native mistral:new mistral:old; do
  model=${spec%%:*}
  layout=${spec##*:}
  "$python" -W ignore tools/hf_reference/make_fixture.py --model "$model" --layout "$layout" \
    --tokenizer "$tmp/tiny/tokenizer.model" --out "tests/fixtures/hf-llava-tiny-$model-$layout"
done
