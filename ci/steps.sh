#!/bin/sh
# The steps of pinhole's drop-in CI, shared by github-actions.yml and gitlab-ci.yml:
#   ci/steps.sh setup                 install packages and .venv (root)
#   ci/steps.sh host K/N              shard K of N of the cases on the runner's own kernel
#   ci/steps.sh kernel SPEC K/N       shard K of N on a Debian kernel in a VM (TCG without KVM)
#   ci/steps.sh merge                 merge every shard under results/ into results/merged
#   ci/steps.sh submit                submit results/merged/kcidb.json.gz to KernelCI when
#                                     KCIDB_PROJECT, KCIDB_TOPIC and credentials are set;
#                                     otherwise validate it (a dry run)
# DRY_RUN=1 prints each command instead of running it. SELECTION narrows the matrix.
set -eu
cd "$(dirname "$0")/.."
SELECTION=${SELECTION:---state=hole,written}
PINHOLE=.venv/bin/pinhole

run() {
    if [ "${DRY_RUN:-}" = 1 ]; then echo "+ $*"; else "$@"; fi
}

# pinhole's exit codes: 0 pass, 3 xpass, 4 all skipped are fine for CI; 1 fail, 2 usage,
# 125 harness are not.
verdict() {
    rc=$1
    case $rc in 0|3|4) return 0 ;; *) return "$rc" ;; esac
}

shard_name() { echo "$1" | tr '/:' '-_'; }

case "${1:-}" in
setup)
    run ./helpers/setup.sh ;;
host)
    rc=0
    run $PINHOLE run --out "results/host-$(shard_name "$2")" --shard "$2" $SELECTION || rc=$?
    verdict $rc ;;
kernel)
    rc=0
    run $PINHOLE matrix --kernel "$2" --out "results/$(shard_name "$2")-$(shard_name "$3")" \
        --shard "$3" $SELECTION || rc=$?
    verdict $rc ;;
merge)
    # Shards of one kernel merge into one run; kernels stay side by side.
    dirs=$(find results \( -name results.json.gz -o -name results.json \) \
           -not -path 'results/merged/*' -exec dirname {} \; \
           2>/dev/null | sort -u)
    rc=0
    run $PINHOLE report $dirs --out results/merged || rc=$?
    verdict $rc ;;
submit)
    run .venv/bin/python -c 'import sys; from pathlib import Path; from conformance.reports import kcidb
kcidb.validate(kcidb.load(Path(sys.argv[1])))' results/merged/kcidb.json.gz
    if [ -n "${KCIDB_PROJECT:-}" ] && [ -n "${KCIDB_TOPIC:-}" ]; then
        gzip -dc results/merged/kcidb.json.gz | run .venv/bin/kcidb-submit \
            -p "$KCIDB_PROJECT" -t "$KCIDB_TOPIC"
    else
        echo "dry run: kcidb.json is valid; set KCIDB_PROJECT and KCIDB_TOPIC to submit"
    fi ;;
*)
    sed -n '2,12p' "$0" >&2
    exit 2 ;;
esac
