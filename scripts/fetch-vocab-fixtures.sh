#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vectors (ggml-vocab-*.gguf with their
# .inp/.out files) from the llama-cpp-python 0.3.36 sdist on PyPI into
# .cache/vocab/, for tests/tokenizer_vocab.rs. Idempotent: does nothing when
# they are already there.
#
# pip downloads the sdist only: `--no-binary llama-cpp-python` applies to that
# package alone, so pip's metadata step installs its build backend
# (scikit-build-core) from wheels and never compiles anything (about 20 s;
# `--no-binary :all:` would build cmake from source). The hash pins the file.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SDIST=".cache/llama_cpp_python-$VERSION.tar.gz"
DEST=.cache/vocab
MARKER="$DEST/.fetched-$VERSION"

if [ -f "$MARKER" ]; then
  exit 0
fi
mkdir -p "$DEST"

if ! { [ -f "$SDIST" ] && echo "$SHA256  $SDIST" | sha256sum -c --quiet - 2>/dev/null; }; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "llama-cpp-python==$VERSION --hash=sha256:$SHA256" >"$tmp/requirements.txt"
  echo "downloading llama-cpp-python $VERSION (sdist, ~77 MB) for the tokenizer test vectors..." >&2
  python3 -m pip download --quiet --progress-bar off --no-deps \
    --no-binary llama-cpp-python -r "$tmp/requirements.txt" -d "$tmp"
  mv "$tmp/llama_cpp_python-$VERSION.tar.gz" "$SDIST"
fi

tar -xzf "$SDIST" -C "$DEST" --strip-components=4 --wildcards \
  "llama_cpp_python-$VERSION/vendor/llama.cpp/models/ggml-vocab-*"
touch "$MARKER"
echo "tokenizer test vectors in $DEST" >&2
