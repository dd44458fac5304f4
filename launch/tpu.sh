#!/usr/bin/env bash
# Run a colajax training job on every worker of a Cloud TPU VM slice.
# usage: bash launch/tpu.sh TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
set -euo pipefail
name=$1 zone=$2 config=$3 workdir=$4; shift 4
repo=${COLAJAX_REPO:-https://example.invalid/colajax.git}  # set COLAJAX_REPO to your fork
gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "
  set -e
  test -d colajax || git clone $repo colajax
  cd colajax && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'
  .venv/bin/colajax train --config $config --workdir $workdir $*
"
