#!/usr/bin/env bash
# Table 1 / Figure 2 on the development data sets (never committed: their licences forbid it).
# Usage: scripts/real_data_table.sh DATA_DIR OUT_DIR [extra jtm-rs experiment options]
# DATA_DIR holds Beauty.txt, Toys_and_Games.txt, Sports_and_Outdoors.txt and Yelp.txt from
# RUCAIBox/CIKM2020-S3Rec (data/*.txt), e.g. extracted by scripts/extract_s3rec_data.sh.
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}; shift 2
cd "$(dirname "$0")/.."
for name in Beauty Toys_and_Games Sports_and_Outdoors Yelp; do
  .venv/bin/jtm-rs experiment "$data/$name.txt" --name "$name" --out "$out/$name" --quiet "$@"
done
