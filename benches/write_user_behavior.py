"""Writes generated data in the Taobao UserBehavior CSV layout, for the paper-scale run of
``benches/scale.py --user-behavior`` (the real file's licence keeps it out of the repository).

    python benches/write_user_behavior.py /tmp/ub_4m.csv --items 4200000 --behaviours 100000000

Rows are ``user_id,item_id,category_id,behavior_type,timestamp`` with no header, users in
order and each user's rows in time order, as in the real file (987 994 users, 4 162 024
items, 9 439 categories, 100 150 807 rows). The behaviours follow :mod:`jtm_rs.synthetic`'s
story (a planted hierarchy, interest clusters, Zipf popularity), generated in chunks of users
so that memory stays bounded; the behaviour types are drawn with the real file's shares (pv
89.6 %, cart 5.5 %, fav 2.9 %, buy 2.0 %).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from jtm_rs import synthetic

KINDS = ("pv", "cart", "fav", "buy")
SHARES = (0.896, 0.055, 0.029, 0.020)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path")
    p.add_argument("--items", type=int, default=4_200_000)
    p.add_argument("--behaviours", type=int, default=100_000_000, help="about this many rows")
    p.add_argument("--mean-length", type=float, default=100.0, help="behaviours per user (the real file: ~101)")
    p.add_argument("--max-length", type=int, default=400)
    p.add_argument("--category-size", type=int, default=512, help="items per category (4.2 M / 512: ~8 200 categories)")
    p.add_argument("--chunk-users", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    users = max(1, round(a.behaviours / a.mean_length))
    behaviour = synthetic.Behaviour(mean_length=a.mean_length, max_length=a.max_length)
    rng = np.random.default_rng(a.seed + 1)
    kinds = pa.array(KINDS)
    t0, rows = time.perf_counter(), 0
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("category_id", pa.int64()),
                        ("behavior_type", pa.string()), ("timestamp", pa.int64())])
    with pacsv.CSVWriter(a.path, schema, write_options=options) as out:
        for user, item, category, timestamp in synthetic.generate_columns(
            a.items, users, chunk_users=a.chunk_users, behaviour=behaviour, category_size=a.category_size, seed=a.seed
        ):
            kind = kinds.take(pa.array(rng.choice(len(KINDS), size=len(user), p=SHARES)))
            out.write_table(pa.table([user + 1, item + 1, category + 1, kind, timestamp], schema=schema))
            rows += len(user)
            print(f"\r{rows:,} rows, {user[-1] + 1:,} of {users:,} users, {time.perf_counter() - t0:.0f} s", end="", flush=True)
    print(f"\nwrote {rows:,} rows of {users:,} users to {a.path} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
