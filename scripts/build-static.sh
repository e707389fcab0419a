#!/bin/sh
# build-static.sh PACKAGE OUTPUT builds one command of this module as a
# static, stamped binary. It is the only build of the images: both
# Dockerfiles run it, and so does `make images-check`, which checks its
# output in CI, so the flags of the images and of CI cannot drift apart.
#
#   VERSION=1.4.0 COMMIT=$(git rev-parse HEAD) BUILD_DATE=2026-12-05T17:00:00Z \
#     sh scripts/build-static.sh ./cmd/executor bin/executor
#
# VERSION, COMMIT and BUILD_DATE are stamped into internal/version with the
# linker's -X. Unset, they are taken from the Git checkout when there is one
# (there is none in a Docker build: .dockerignore leaves .git out), else
# left unstamped, and -version then says "unknown". GOOS and GOARCH pass
# through, for cross-builds (the Dockerfiles set them from TARGETOS and
# TARGETARCH).
#
# The flags, and why:
#   CGO_ENABLED=0    no C: the binary needs no libc, so it runs on a
#                    distroless static image; net and os/user then use
#                    their pure-Go code, so no netgo/osusergo tags are needed
#   -trimpath        no paths of the build machine in the binary
#   -buildvcs=false  stamping is the only source of the commit, so a build
#                    from a checkout and one from a Docker context agree
#   -ldflags -s -w   no symbol table or DWARF: a smaller image
set -eu

if [ "$#" -ne 2 ]; then
	echo "usage: $0 PACKAGE OUTPUT, e.g. $0 ./cmd/executor bin/executor" >&2
	exit 2
fi
package=$1
output=$2

in_git() { command -v git >/dev/null 2>&1 && git rev-parse --git-dir >/dev/null 2>&1; }
if in_git; then
	: "${VERSION:=$(git describe --tags --always --dirty)}"
	: "${COMMIT:=$(git rev-parse HEAD)}"
fi
: "${VERSION:=}" "${COMMIT:=}" "${BUILD_DATE:=}"
if [ -n "$VERSION$COMMIT" ] && [ -z "$BUILD_DATE" ]; then
	BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
fi

# The values go inside -ldflags, which splits on spaces and treats quotes
# specially: allow only the characters versions, hashes and dates use.
for pair in "VERSION=$VERSION" "COMMIT=$COMMIT" "BUILD_DATE=$BUILD_DATE"; do
	case ${pair#*=} in
	*[!A-Za-z0-9._+:-]*)
		echo "$0: ${pair%%=*}=\"${pair#*=}\": only letters, digits and . _ + : - are allowed" >&2
		exit 2
		;;
	esac
done

# The import path of internal/version comes from the module itself, so a
# fork that renamed the module needs no edit here.
version_package=$(go list -f '{{.ImportPath}}' ./internal/version)
ldflags="-s -w"
[ -z "$VERSION" ] || ldflags="$ldflags -X $version_package.Version=$VERSION"
[ -z "$COMMIT" ] || ldflags="$ldflags -X $version_package.Commit=$COMMIT"
[ -z "$BUILD_DATE" ] || ldflags="$ldflags -X $version_package.BuildDate=$BUILD_DATE"

CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$output" "$package"
