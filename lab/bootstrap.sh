#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 (as root), skipping what is there:
# a JDK 17 with javac and Debian's Tomcat 10 (no conf/: the lab writes one per host).
set -euo pipefail
need=()
for pkg in openjdk-17-jdk-headless tomcat10-common libtomcat10-java; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "bootstrap: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
