#!/usr/bin/env bash
# Writes the S3Rec development files out of a bare clone of RUCAIBox/CIKM2020-S3Rec.
# Usage: scripts/extract_s3rec_data.sh GIT_DIR OUT_DIR
set -euo pipefail
git_dir=${1:?GIT_DIR of RUCAIBox/CIKM2020-S3Rec}; out=${2:?OUT_DIR}
mkdir -p "$out"
for f in Beauty Toys_and_Games Sports_and_Outdoors Yelp; do
  git --git-dir "$git_dir" show "HEAD:data/$f.txt" > "$out/$f.txt"
  git --git-dir "$git_dir" show "HEAD:data/${f}_item2attributes.json" > "$out/${f}_item2attributes.json"
done
echo "wrote $(ls "$out" | wc -l) files to $out"
