#!/usr/bin/env bash
# System packages some tests use: headless Chromium (dashboard test) and promtool (metrics test).
# Installed from Debian when missing and we may (root with apt-get); otherwise those tests skip
# and say why.
set -u
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (Debian packages) for the browser and metrics tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || echo "warning: could not install ${missing[*]}; the tests that need them will skip"
else
  echo "note: ${missing[*]} not installed and apt-get unavailable; the tests that need them will skip"
fi
exit 0
