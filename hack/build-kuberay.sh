#!/usr/bin/env bash
# Builds the KubeRay operator (the RayJob/RayCluster controller) from its
# published Go module and copies its CRDs beside it, so the cluster and e2e
# tests run the real controller against the test API server.
#
# Output is cached under .cache/cluster (git-ignored): the binary in bin/, the
# CRDs (ray.io_rayclusters.yaml, ray.io_rayjobs.yaml, ...) in kuberay-crds/.
# A second run with the same version builds nothing. The build is CPU heavy,
# so it runs niced.
set -euo pipefail

KUBERAY_VERSION="${KUBERAY_VERSION:-v1.5.0}"
MODULE="github.com/ray-project/kuberay/ray-operator"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ROOT}/.cache/cluster"
BIN="${CACHE}/bin"
CRDS="${CACHE}/kuberay-crds"
STAMP="${BIN}/.built-kuberay-${KUBERAY_VERSION}"

if [[ -f "${STAMP}" ]]; then
  echo "KubeRay ${KUBERAY_VERSION} already built in ${BIN}"
  exit 0
fi
mkdir -p "${BIN}"
echo "Building KubeRay operator ${KUBERAY_VERSION}"
# The module has no replace directives, so `go install MODULE@VERSION` builds
# it exactly as released; main.go sits at the module root.
CGO_ENABLED=0 GOBIN="${BIN}" nice -n 10 go install -trimpath -ldflags "-s -w" \
  "${MODULE}@${KUBERAY_VERSION}"
mv "${BIN}/ray-operator" "${BIN}/kuberay-operator"

source_dir="$(go mod download -json "${MODULE}@${KUBERAY_VERSION}" \
  | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
rm -rf "${CRDS}" && mkdir -p "${CRDS}"
cp "${source_dir}"/config/crd/bases/*.yaml "${CRDS}/"
chmod u+w "${CRDS}"/*.yaml
touch "${STAMP}"
