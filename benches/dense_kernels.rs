//! The scoring pass's multiplies (`jtm_rs::dense_kernels`) and the whole pass
//! (`jtm_rs::mlp_scores`) on the default model's shapes, float32 and bfloat16, one thread.
//! Throughput is in FLOP (2 per multiply-add), to set beside the machine's GEMM rate
//! (`benches/arithmetic.py`).
//!
//! Run: `cargo bench --bench dense_kernels`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jtm_rs::dense_kernels::{native, Init, Packed, Precision, Rows, Scratch};
use jtm_rs::fused_mlp::{Layer, Mlp};
use jtm_rs::mlp_scores::{pair_scores, NodeRows, ScoredPairs};

fn values(n: usize, salt: u64) -> Vec<f32> {
    let mut x = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

const PRECISIONS: [(Precision, &str); 2] = [
    (Precision::Float32, "float32"),
    (Precision::BFloat16, "bfloat16"),
];

fn layers(c: &mut Criterion) {
    let rows = 256;
    let mut g = c.benchmark_group("dense_layer_256_rows");
    for (precision, name) in PRECISIONS {
        if !native(precision) {
            eprintln!("{name}: no AVX-512 kernel on this CPU (matrixmultiply instead)");
        }
        for (n, k) in [(128, 24), (64, 128), (24, 64)] {
            let (w, x, bias) = (values(n * k, 1), values(rows * k, 2), values(n, 3));
            let packed = Packed::new(&w, n, k, precision);
            let mut y = vec![0.0f32; rows * n];
            let mut scratch = Scratch::default();
            g.throughput(Throughput::Elements((2 * rows * n * k) as u64));
            g.bench_with_input(BenchmarkId::new(name, format!("{k}x{n}")), &(), |b, _| {
                b.iter(|| {
                    packed.apply(
                        Rows::dense(&x),
                        rows,
                        Init::Bias(&bias),
                        Some(0.25),
                        &mut y,
                        &mut scratch,
                    )
                })
            });
        }
    }
    g.finish();
}

fn pass(c: &mut Criterion) {
    // 128-64-24 after a first layer of [128, 240 + 24]: 25 648 FLOP a pair.
    let (dim, hidden, users, table_rows, n_pairs) = (24, 128, 960, 100_000, 25_600);
    let w_node = values(hidden * dim, 3);
    let (w1, b1, w2, b2, w3, b3) = (
        values(64 * 128, 4),
        values(64, 5),
        values(24 * 64, 6),
        values(24, 7),
        values(24, 8),
        values(1, 9),
    );
    let mlp = Mlp {
        w_node: &w_node,
        dim,
        hidden,
        layers: vec![
            Layer {
                weight: &w1,
                bias: &b1,
                inputs: 128,
                outputs: 64,
            },
            Layer {
                weight: &w2,
                bias: &b2,
                inputs: 64,
                outputs: 24,
            },
            Layer {
                weight: &w3,
                bias: &b3,
                inputs: 24,
                outputs: 1,
            },
        ],
        slopes: vec![0.25; 3],
    };
    let (share, table) = (values(users * hidden, 10), values(table_rows * dim, 11));
    let rows: Vec<i64> = (0..n_pairs as i64).map(|p| p * 7 % users as i64).collect();
    let nodes: Vec<i64> = (0..n_pairs as i64)
        .map(|p| p * 7919 % table_rows as i64)
        .collect();
    let pairs = ScoredPairs {
        user_share: &share,
        node_rows: NodeRows::Embeddings(&table),
        rows: &rows,
        nodes: &nodes,
    };
    let mut g = c.benchmark_group("scoring_pass_25600_pairs");
    g.throughput(Throughput::Elements((n_pairs * 25_648) as u64));
    for (precision, name) in PRECISIONS {
        g.bench_with_input(BenchmarkId::new(name, "one thread"), &(), |b, _| {
            b.iter(|| pair_scores(&mlp, &pairs, precision, 1).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, layers, pass);
criterion_main!(benches);
