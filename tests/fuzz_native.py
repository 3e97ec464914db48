"""Hypothesis fuzzing of every native entry point (``jtm_rs._core``), run as a child process.

``tests/test_fuzz.py`` starts this file in a child so that an abort (a Rust allocation
failure, a segfault, a panic across the boundary) or a hang ends the child, not the test
session, and is reported with the case that caused it: each case is written to ``--log``
before it runs. The child's address space is capped (``--memory-gb`` above what the imports
took), so a request the core did not bound aborts here instead of swapping.

Every call must either return or raise one of :data:`ALLOWED`: a ``JtmError`` subclass,
``TypeError`` for an argument of the wrong Python type, ``MemoryError``, or the exception a
callback raised itself. Anything else —
``PanicException``, ``OverflowError``, ``SystemError`` — fails the case.

Run more cases by hand::

    python tests/fuzz_native.py --examples 2000 --seed random --log /tmp/fuzz.log
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import random
import struct
import sys
import zlib

import numpy as np
from hypothesis import HealthCheck, given, seed as hyp_seed, settings, strategies as st

from jtm_rs import _core
from jtm_rs.exceptions import JtmError

class CallbackFailed(Exception):
    """What a fuzzed callback raises: it must reach the caller unchanged."""


ALLOWED = (JtmError, TypeError, MemoryError, CallbackFailed)

LOG = None  # the file each case is written to before it runs


def note(entry: str, **case) -> None:
    LOG.write(f"{entry} {case!r}\n"[:4000])
    LOG.flush()
    os.fsync(LOG.fileno())


def survive(entry: str, fn, **case):
    """Runs ``fn()`` (already bound to ``case``); an exception outside ALLOWED fails the case."""
    note(entry, **case)
    try:
        return fn()
    except ALLOWED:
        return None
    except BaseException as e:  # PanicException derives from BaseException
        if isinstance(e, KeyboardInterrupt):
            raise
        raise AssertionError(f"{entry} raised {type(e).__module__}.{type(e).__name__}: {e} for {case!r}") from None


# --- strategies ------------------------------------------------------------------------------

wide_int = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), 10**30]),
)
opt_int = st.one_of(st.none(), wide_int)
ID_DTYPES = ["int64", "int32", "uint64", "uint32", "int8", "float64", "bool", "object"]


@st.composite
def id_arrays(draw, max_len: int = 40):
    """Id arrays of any dtype and shape, with values from small to 2**64-1, or plain lists."""
    n = draw(st.integers(0, max_len))
    vals = draw(st.lists(st.one_of(st.integers(-5, 300), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, -(2**63), 2**32])), min_size=n, max_size=n))
    dtype = draw(st.sampled_from(ID_DTYPES + ["list", "2d", "strided"]))
    if dtype == "list":
        return vals
    if dtype == "object":
        return np.array(vals + ["x"] * draw(st.integers(0, 1)), dtype=object)
    big = np.array([v % 2**64 for v in vals], dtype=np.uint64).astype(np.int64) if vals else np.zeros(0, np.int64)
    if dtype == "2d":
        return np.resize(big, (max(n // 2, 1), 2)) if n else big.reshape(0, 2)
    if dtype == "strided":
        return np.repeat(big, 2)[::2]
    with np.errstate(all="ignore"):
        return big.astype(dtype) if dtype != "uint64" else np.array([v % 2**64 for v in vals], dtype=np.uint64)


@st.composite
def trees(draw):
    n = draw(st.integers(1, 200))
    arity = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**32))
    items = np.random.default_rng(seed).choice(10**6, size=n, replace=False)
    return _core.Tree.random(items, arity, None, seed)


def callback_result(kind: str, shape, rng: np.random.Generator):
    """What a fuzzed ``score_fn``/``weights_fn`` returns."""
    good = rng.normal(size=shape)
    if kind == "ok64":
        return good
    if kind == "ok32":
        return good.astype(np.float32)
    if kind in ("nan", "inf"):
        if good.size:
            good.flat[rng.integers(good.size)] = np.nan if kind == "nan" else np.inf
        return good
    if kind == "huge":
        return good * 1e300
    if kind == "shape":
        return rng.normal(size=(shape[0] + 1,) + tuple(shape[1:]))
    if kind == "transpose":
        return good.T
    if kind == "int":
        return np.ones(shape, dtype=np.int64)
    if kind == "list":
        return good.tolist()
    if kind == "none":
        return None
    if kind == "strided":
        return np.repeat(good, 2, axis=-1)[..., ::2] if good.ndim else good
    if kind == "raise":
        raise CallbackFailed("callback failed")
    return "not an array"


CALLBACK_KINDS = ["ok64", "ok32", "nan", "inf", "huge", "shape", "transpose", "int", "list", "none", "strided", "raise", "str"]


# --- the entry points ------------------------------------------------------------------------


@given(kind=st.sampled_from(["random", "from_order", "from_categories", "from_leaves", "from_embeddings"]),
       items=id_arrays(), other=id_arrays(), arity=wide_int, leaf_level=opt_int, seed=wide_int,
       emb_dim=st.integers(0, 4), n_threads=opt_int, iterations=wide_int)
def fuzz_constructors(kind, items, other, arity, leaf_level, seed, emb_dim, n_threads, iterations):
    T = _core.Tree
    calls = {
        "random": lambda: T.random(items, arity, leaf_level, seed),
        "from_order": lambda: T.from_order(items, arity, leaf_level),
        "from_categories": lambda: T.from_categories(items, other, arity, leaf_level, seed),
        "from_leaves": lambda: T.from_leaves(items, other, arity, leaf_level),
        "from_embeddings": lambda: T.from_embeddings(items, np.ones((len(other), emb_dim), np.float32), arity, leaf_level,
                                                     iterations, seed, n_threads),
    }
    tree = survive(kind, calls[kind], items=items, other=other, arity=arity, leaf_level=leaf_level, seed=seed,
                   n_threads=n_threads, iterations=iterations)
    if tree is not None:
        tree.validate()


@given(tree=trees(), method=st.sampled_from(["leaves", "items_at", "ancestors", "item_ancestors", "hierarchical_features",
                                             "level_of", "is_live", "live_nodes", "children", "descendants", "capacity"]),
       ids=id_arrays(), level=wide_int, padding=opt_int)
def fuzz_queries(tree, method, ids, level, padding):
    calls = {
        "leaves": lambda: tree.leaves(ids),
        "items_at": lambda: tree.items_at(ids, padding if padding is not None else -1),
        "ancestors": lambda: tree.ancestors(ids, level),
        "item_ancestors": lambda: tree.item_ancestors(ids, level),
        "hierarchical_features": lambda: tree.hierarchical_features(ids, level, padding),
        "level_of": lambda: tree.level_of(ids),
        "is_live": lambda: tree.is_live(ids),
        "live_nodes": lambda: tree.live_nodes(level),
        "children": lambda: tree.children(ids),
        "descendants": lambda: tree.descendants(ids, level),
        "capacity": lambda: tree.capacity(level),
    }
    survive(method, calls[method], ids=ids, level=level, padding=padding, tree=(tree.n_items, tree.arity))


@given(tree=trees(), how=st.sampled_from(["flip", "truncate", "extend", "header", "random"]),
       where=st.integers(0, 10**6), byte=st.integers(0, 255), length=st.integers(0, 200),
       fields=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
       fill=st.binary(max_size=64))
def fuzz_tree_bytes(tree, how, where, byte, length, fields, fill):
    b = bytearray(tree.to_bytes())
    if how == "flip":
        b[where % len(b)] ^= byte or 1
    elif how == "truncate":
        b = b[: where % len(b)]
    elif how == "extend":
        b += bytes(length)
    elif how == "header":  # a crafted header with a valid checksum (finding 1)
        body = b"JTMTREE\0" + struct.pack("<IQIQ", *fields) + fill
        b = bytearray(body + struct.pack("<I", zlib.crc32(body)))
    else:
        b = bytearray(random.Random(where).randbytes(length))
    back = survive("from_bytes", lambda: _core.Tree.from_bytes(bytes(b)), how=how, where=where, byte=byte, length=length,
                   fields=fields, fill=fill)
    if back is not None:
        back.validate()


@given(tree=trees(), targets=id_arrays(), negatives=st.one_of(id_arrays(12), st.lists(st.integers(-2, 2**20), max_size=12)),
       start_level=wide_int, seed=wide_int, n_threads=opt_int, valid_targets=st.booleans())
def fuzz_generate_samples(tree, targets, negatives, start_level, seed, n_threads, valid_targets):
    if valid_targets:
        targets = tree.items[: max(1, len(targets) % (tree.n_items + 1))]
    survive("generate_samples", lambda: tree.generate_samples(targets, negatives, start_level, seed, n_threads),
            targets=targets, negatives=negatives, start_level=start_level, seed=seed, n_threads=n_threads)


@given(tree=trees(), n_users=wide_int, k=wide_int, m=opt_int, n_threads=opt_int,
       kinds=st.lists(st.sampled_from(CALLBACK_KINDS), min_size=1, max_size=4), seed=st.integers(0, 2**32))
def fuzz_beam_search(tree, n_users, k, m, n_threads, kinds, seed):
    rng = np.random.default_rng(seed)
    calls = iter(kinds * 64)

    def score_fn(rows, nodes, level):
        return callback_result(next(calls, "ok64"), (len(nodes),), rng)

    survive("beam_search", lambda: tree.beam_search(score_fn, n_users, k, m, n_threads),
            n_users=n_users, k=k, m=m, n_threads=n_threads, kinds=kinds)


@given(tree=trees(), d=wide_int, max_candidates=opt_int, chunk_size=opt_int, n_threads=opt_int,
       rebalance=st.sampled_from(["regret", "greedy", "nonsense"]), improve_passes=wide_int, keep_better=st.booleans(),
       kinds=st.lists(st.sampled_from(CALLBACK_KINDS), min_size=1, max_size=4), seed=st.integers(0, 2**32))
def fuzz_learn_tree(tree, d, max_candidates, chunk_size, n_threads, rebalance, improve_passes, keep_better, kinds, seed):
    rng = np.random.default_rng(seed)
    calls = iter(kinds * 256)

    def weights_fn(items, parents, start, end):
        return callback_result(next(calls, "ok64"), (len(items), tree.arity ** (end - start + 1)), rng)

    new = survive("learn_tree", lambda: _core.learn_tree(weights_fn, tree, d, max_candidates, chunk_size, n_threads, None,
                                                          rebalance, improve_passes, keep_better),
                  d=d, max_candidates=max_candidates, chunk_size=chunk_size, n_threads=n_threads, rebalance=rebalance,
                  improve_passes=improve_passes, keep_better=keep_better, kinds=kinds)
    if new is not None:
        new.validate()
        assert np.array_equal(new.items, tree.items)


def known_cases() -> None:
    """The requests of the reliability issue that aborted the process before they were bounded."""
    t = _core.Tree.random(np.arange(50), 2, None, 0)
    t31 = _core.Tree.random(np.arange(50), 2, 31, 0)
    zeros = lambda i, p, s, e: np.zeros((len(i), 2 ** (e - s + 1)))  # noqa: E731
    cases = {
        "beam_search 2**40 users": lambda: t.beam_search(lambda r, n, l: np.zeros(len(n), np.float32), 2**40, 4),
        "beam_search 2**31 users, k 2**40": lambda: t.beam_search(lambda r, n, l: np.zeros(len(n), np.float32), 2**31 - 1, 2**40, 4),
        "generate_samples 1e8 targets": lambda: t.generate_samples(np.zeros(10**8, np.int64), [1] * t.n_levels),
        "learn_tree d=31 max_candidates=None": lambda: _core.learn_tree(zeros, t31, 31, None),
        "children arity 1e10": lambda: _core.Tree.from_leaves([0], [1], 10**10).children([0]),
        "descendants level 62": lambda: _core.Tree.from_order([0, 1], 2, 62).descendants([0], 62),
    }
    for name, fn in cases.items():
        survive(name, fn)


FUZZERS = [fuzz_constructors, fuzz_queries, fuzz_tree_bytes, fuzz_generate_samples, fuzz_beam_search, fuzz_learn_tree]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=100, help="cases per entry point")
    p.add_argument("--seed", default="0", help="hypothesis seed, or 'random'")
    p.add_argument("--log", required=True, help="file that receives each case before it runs")
    p.add_argument("--memory-gb", type=float, default=3.0, help="address space allowed beyond the imports")
    p.add_argument("--case-timeout", type=float, default=60.0, help="seconds one case may take before it counts as a hang")
    a = p.parse_args(argv)
    global LOG
    LOG = open(a.log, "w")
    try:
        import resource

        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = used + int(a.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ImportError, OSError, ValueError):  # no /proc or no rlimit: run uncapped
        pass
    seed = random.randrange(2**32) if a.seed == "random" else int(a.seed)
    print(f"fuzz_native: seed {seed}, {a.examples} cases per entry point", flush=True)
    failed = []
    faulthandler.dump_traceback_later(a.case_timeout, exit=True)
    known_cases()
    faulthandler.cancel_dump_traceback_later()
    print("known cases: passed", flush=True)
    for fuzzer in FUZZERS:
        # A hang: dump every thread's stack and exit, so the parent sees the case in the log.
        faulthandler.dump_traceback_later(a.case_timeout * a.examples, exit=True)
        run = settings(max_examples=a.examples, deadline=None, database=None, derandomize=False,
                       suppress_health_check=list(HealthCheck))(hyp_seed(seed)(fuzzer))
        try:
            run()
            verdict = f"{fuzzer.__name__}: {a.examples} cases passed"
        except Exception as e:  # hypothesis has shrunk it; report it and go on to the next entry point
            failed.append(fuzzer.__name__)
            verdict = f"{fuzzer.__name__}: FAILED\n{e}"
        faulthandler.cancel_dump_traceback_later()
        LOG.write(verdict + "\n")
        LOG.flush()
        print(verdict, flush=True)
    if failed:
        print(f"fuzz_native: {len(failed)} entry point(s) failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
