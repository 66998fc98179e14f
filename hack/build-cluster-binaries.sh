#!/usr/bin/env bash
# Builds the Kubernetes binaries the cluster tests run (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) and helm from the
# published Go modules. etcd comes from Debian (hack/install-system-deps.sh).
#
# k8s.io/kubernetes is not meant to be consumed as a module: its go.mod points
# every k8s.io/* staging module at ./staging with a `replace`, which Go
# ignores for dependencies. We therefore read the staging module list from
# that go.mod and pin each one to the matching published v0.X.Y tag.
#
# Output is cached under .cache/cluster/bin (git-ignored); a second run with
# the same version builds nothing.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.3}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ROOT}/.cache/cluster"
BIN="${CACHE}/bin"
STAMP="${BIN}/.built-${K8S_VERSION}"
COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

build_kubernetes() {
  if [[ -f "${STAMP}" ]]; then
    echo "Kubernetes ${K8S_VERSION} binaries already built in ${BIN}"
    return
  fi
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local patch="${K8S_VERSION##*.}"
  local staging_version="v0.${minor}.${patch}"
  local work="${CACHE}/module"
  rm -rf "${work}" && mkdir -p "${work}" "${BIN}"
  cd "${work}"
  printf 'module trustdoc.io/cluster-binaries\n\ngo 1.24.0\n' > go.mod

  local upstream_mod
  upstream_mod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
    | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  local staging
  staging="$(grep -E '^\s*k8s\.io/\S+ => \./staging/' "${upstream_mod}" | awk '{print $1}')"
  [[ -n "${staging}" ]] || { echo "no staging modules found in ${upstream_mod}" >&2; exit 1; }
  for module in ${staging}; do
    go mod edit -replace="${module}=${module}@${staging_version}"
  done
  for cmd in "${COMMANDS[@]}"; do
    go get "k8s.io/kubernetes/cmd/${cmd}@${K8S_VERSION}"
  done

  # Stamp the real version in, or the binaries report v0.0.0 and kubectl warns
  # about version skew on every call.
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  done
  for cmd in "${COMMANDS[@]}"; do
    echo "Building ${cmd} ${K8S_VERSION}"
    CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${BIN}/${cmd}" "k8s.io/kubernetes/cmd/${cmd}"
  done
  touch "${STAMP}"
}

build_helm() {
  local stamp="${BIN}/.built-helm-${HELM_VERSION}"
  if [[ -f "${stamp}" ]]; then
    echo "helm ${HELM_VERSION} already built in ${BIN}"
    return
  fi
  mkdir -p "${BIN}"
  echo "Building helm ${HELM_VERSION}"
  CGO_ENABLED=0 GOBIN="${BIN}" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  touch "${stamp}"
}

build_kubernetes
build_helm
