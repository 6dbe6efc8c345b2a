#!/usr/bin/env bash
# System packages the test suite uses for real components: Tesseract OCR,
# Chromium (a real browser for web tests), Java (the COCO metrics), PostgreSQL.
# Installs only what is missing; needs root (or sudo) for apt-get.
set -euo pipefail

need=()
command -v tesseract >/dev/null || need+=(tesseract-ocr)
command -v chromium >/dev/null || need+=(chromium chromium-driver)
command -v java >/dev/null || need+=(default-jre-headless)
command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v npm >/dev/null || need+=(nodejs npm)  # axe-core for the web page's accessibility test
command -v curl >/dev/null || need+=(curl)  # the README's curl examples (tests/e2e/test_readme_commands.py)
# The TrueType font the OCR tests and benchmarks render known text with.
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || need+=(fonts-dejavu-core)
# OpenCV (opencv-python-headless, pulled in by rapidocr) loads GLib when imported.
ldconfig -p | grep -q 'libglib-2\.0\.so\.0 ' || need+=(libglib2.0-0)

if ((${#need[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "installing system packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Test-only JavaScript (axe-core; the SARIF 2.1.0 schema; onnxruntime-web, which
# `blipcap export web` copies into its bundles), pinned by tests/e2e/package-lock.json.
e2e="$(dirname "$0")/../tests/e2e"
if [[ ! -f "$e2e/node_modules/axe-core/axe.min.js" || ! -f "$e2e/node_modules/@microsoft/jest-sarif/lib/schemas/sarif-2.1.0-rtm.5.json" || ! -f "$e2e/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs" ]]; then
  echo "installing tests/e2e JavaScript packages (npm ci)" >&2
  npm ci --prefix "$e2e" --no-audit --no-fund --silent
fi
