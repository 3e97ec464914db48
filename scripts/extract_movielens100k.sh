#!/usr/bin/env bash
# Writes MovieLens 100K (GroupLens; 943 users, 1 682 films, 100 000 ratings over seven months
# of 1997-98) as a behaviour table with a global clock, for the runner's time protocol
# (docs/lifecycle.md): user,item,timestamp,category, the category being the film's first
# genre in u.item. Every rating counts as a behaviour.
# Usage: scripts/extract_movielens100k.sh GIT_DIR OUT_DIR
#   GIT_DIR: a bare clone holding ml-100k/ (e.g. tule2236/Item-based-CF-with-PySpark, whose
#   copy adds three ratings of a user 0, dropped here: GroupLens numbers users from 1)
set -euo pipefail
git_dir=${1:?GIT_DIR holding ml-100k/u.data and u.item}; out=${2:?OUT_DIR}
mkdir -p "$out"
git --git-dir "$git_dir" show HEAD:ml-100k/u.item > "$out/.u.item"
git --git-dir "$git_dir" show HEAD:ml-100k/u.data |
  LC_ALL=C awk -F'\t' 'BEGIN { OFS = "," } FNR == NR { split($0, f, "|"); g[f[1]] = 0
                           for (i = 6; i <= 24; i++) if (f[i] == 1) { g[f[1]] = i - 6; break }; next }
    NF >= 4 && $1 > 0 { if (!header++) print "user", "item", "timestamp", "category"; print $1, $2, $4, g[$2] }' \
    "$out/.u.item" - > "$out/ml-100k.csv"
rm "$out/.u.item"
echo "wrote $(($(wc -l < "$out/ml-100k.csv") - 1)) behaviours to $out/ml-100k.csv"
