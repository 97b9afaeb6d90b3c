#!/usr/bin/env bash
# Build and push the four images, the targets of images/Dockerfile, tagged with the package version:
#   <REGISTRY>/operator:<version>  <REGISTRY>/generate:<version>  <REGISTRY>/train:<version>
#   <REGISTRY>/rl:<version>
# which are the defaults of the operator (controller/config.py) and of the Helm chart.
#
#   images/build.sh                    build and push all four
#   images/build.sh operator train     only these
#   PUSH=0 images/build.sh operator    build into the local image store, no push
#   DRY_RUN=1 images/build.sh          print the commands only
#
# Environment: REGISTRY (default ghcr.io/selftaught), VERSION (default and only allowed value:
# selftaught.__version__, the one version string; pyproject.toml reads it too), PLATFORM (default
# linux/amd64), DOCKER (default docker), EXTRA_ARGS (more `docker buildx build` arguments, e.g.
# cache settings).
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY="${REGISTRY:-ghcr.io/selftaught}"
PLATFORM="${PLATFORM:-linux/amd64}"
DOCKER="${DOCKER:-docker}"
PUSH="${PUSH:-1}"
DRY_RUN="${DRY_RUN:-0}"

DOCKERFILE=images/Dockerfile
TARGETS=(operator generate train rl)

package_version() {
  sed -n 's/^__version__ = "\(.*\)"$/\1/p' operator/selftaught/__init__.py
}
VERSION="${VERSION:-$(package_version)}"
if [[ "$VERSION" != "$(package_version)" ]]; then
  echo "error: VERSION $VERSION differs from selftaught.__version__ $(package_version)" >&2
  exit 1
fi

REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
if [[ -n "$(git status --porcelain -- pyproject.toml operator images 2>/dev/null)" ]]; then
  echo "warning: uncommitted changes in the build context; org.opencontainers.image.revision=$REVISION is not the whole truth" >&2
fi

if [[ $# -gt 0 ]]; then images=("$@"); else images=("${TARGETS[@]}"); fi
if [[ "$PUSH" == "1" ]]; then output=--push; else output=--load; fi

for image in "${images[@]}"; do
  if [[ " ${TARGETS[*]} " != *" $image "* ]] || ! grep -qE "^FROM .* AS ${image}\$" "$DOCKERFILE"; then
    echo "error: $image is not an image target of $DOCKERFILE (${TARGETS[*]})" >&2
    exit 1
  fi
  command=(
    "$DOCKER" buildx build
    --file "$DOCKERFILE"
    --target "$image"
    --platform "$PLATFORM"
    --build-arg "VERSION=$VERSION"
    --build-arg "REVISION=$REVISION"
    --build-arg "CREATED=$CREATED"
    --tag "$REGISTRY/$image:$VERSION"
    "$output"
  )
  # shellcheck disable=SC2206  # EXTRA_ARGS is meant to split into words
  command+=(${EXTRA_ARGS:-} .)
  echo "+ ${command[*]}"
  if [[ "$DRY_RUN" != "1" ]]; then
    "${command[@]}"
  fi
done
