#!/usr/bin/env bash
# Install the Debian packages the tests need, only those missing:
#   libportaudio2 (sounddevice), chromium (end-to-end browser tests), espeak-ng + sox (test speech),
#   flite + festival and three festival voices (the voice dev set's other-engine voices).
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q libportaudio.so.2 || need+=(libportaudio2)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
command -v flite >/dev/null 2>&1 || need+=(flite)
command -v text2wave >/dev/null 2>&1 || need+=(festival)
voices=/usr/share/festival/voices
[ -d $voices/english/kal_diphone ] || need+=(festvox-kallpc16k)
[ -d $voices/english/ked_diphone ] || need+=(festvox-kdlpc16k)
[ -d $voices/us/cmu_us_slt_arctic_hts ] || need+=(festvox-us-slt-hts)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: cannot install ${need[*]} (no apt-get); tests that need them are skipped" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
echo "installing Debian packages: ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
