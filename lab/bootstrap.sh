#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 (as root), skipping what is there:
# a JDK 17 with javac, Debian's Tomcat 10 (no conf/: the lab writes one per host) and HAProxy
# (the lab's load balancer, lab/balancer.py; Debian's package does not start it here: no systemd).
set -euo pipefail
need=()
for pkg in openjdk-17-jdk-headless tomcat10-common libtomcat10-java haproxy; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "bootstrap: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
