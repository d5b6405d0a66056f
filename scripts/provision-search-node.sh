#!/usr/bin/env bash
# Resolves the test bed's search node (OpenSearch in a JVM, from Maven Central)
# into the local Maven repository and records its classpath in the cache,
# keyed by the pom's hash. Prints the classpath file's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cache-env.sh
source "$here/scripts/cache-env.sh"

pom="$here/tests/bed/search-node-pom.xml"
key="$(sha256sum "$pom" | cut -c1-16)"
classpath_file="$CACHE_DIR/search-node-$key/classpath.txt"

if [[ ! -s "$classpath_file" ]]; then
  echo "search node: resolving OpenSearch runner from Maven Central" >&2
  mkdir -p "$(dirname "$classpath_file")"
  mvn --batch-mode --quiet -f "$pom" dependency:build-classpath \
    -Dmdep.outputFile="$classpath_file.tmp" >&2
  mv "$classpath_file.tmp" "$classpath_file"
fi
echo "$classpath_file"
