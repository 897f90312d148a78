#!/usr/bin/env bash
# Make sure the tools the local runtime needs are present: Java (17) and Maven, and openssl (it
# makes the CA and certificates of a SASL_SSL broker, kafka_security="sasl_ssl", and its tests);
# and the headless browser the dashboard's test drives (Debian's chromium and its chromedriver).
# On Debian they come from the distribution's packages; this needs root (as on the project's machines).
set -euo pipefail
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${missing[*]} (Debian packages) for the local Kafka + StateFun runtime and tests"
if [ "$(id -u)" -ne 0 ]; then
  echo "not root: install ${missing[*]} yourself (e.g. sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
