//! Tree learning's samples per item: the training examples grouped by target item, at most
//! `cap` of them per item, chosen in the order of a random permutation of the examples.
//!
//! The same rows as a stable sort of the permuted targets (the first `cap` of each item in
//! permutation order), in two passes over the examples with memory for the items only: at
//! 78 M examples the sort and its copies held ~4 GB at once, the highest mark of a fit at the
//! UserBehavior scale (docs/scale.md).

use crate::error::{JtmError, Result};

/// Examples grouped by target: item `keys[k]`'s kept rows are
/// `rows[indptr[k]..indptr[k + 1]]`, of its `counts[k]` examples.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemSamples {
    pub keys: Vec<i64>,
    pub indptr: Vec<i64>,
    pub rows: Vec<i64>,
    pub counts: Vec<i64>,
}

/// The examples of each target in `targets` (non-negative item ids), taken in the order of
/// `perm` (a permutation of the example rows), the first `cap` per item (`None`: all). Keys
/// ascend.
pub fn item_samples<T: Copy + Into<i64>>(
    targets: &[T],
    perm: &[i64],
    cap: Option<usize>,
) -> Result<ItemSamples> {
    let n = targets.len();
    if perm.len() != n {
        return Err(JtmError::InvalidArgument(format!(
            "a permutation of {} rows for {n} targets",
            perm.len()
        )));
    }
    if cap == Some(0) {
        return Err(JtmError::InvalidArgument(
            "the samples per item must be at least 1".into(),
        ));
    }
    let mut max = -1i64;
    for &t in targets {
        let t = t.into();
        if t < 0 {
            return Err(JtmError::InvalidArgument(format!(
                "targets must be non-negative item ids, got {t}"
            )));
        }
        max = max.max(t);
    }
    // Item ids are internal (dense); a sparse id range falls back to the sorted distinct ids.
    let dense = (max as u64) < 4 * n as u64 + 1024;
    let keys: Vec<i64> = if dense {
        let mut seen = vec![false; (max + 1) as usize];
        targets.iter().for_each(|&t| seen[t.into() as usize] = true);
        (0..=max).filter(|&t| seen[t as usize]).collect()
    } else {
        let mut k: Vec<i64> = targets.iter().map(|&t| t.into()).collect();
        k.sort_unstable();
        k.dedup();
        k
    };
    let slot_of: Box<dyn Fn(i64) -> usize> = if dense {
        let mut slot = vec![u32::MAX; (max + 1) as usize];
        keys.iter()
            .enumerate()
            .for_each(|(k, &t)| slot[t as usize] = k as u32);
        Box::new(move |t| slot[t as usize] as usize)
    } else {
        let keys = keys.clone();
        Box::new(move |t| keys.binary_search(&t).unwrap_or(0))
    };
    let mut counts = vec![0i64; keys.len()];
    targets.iter().for_each(|&t| counts[slot_of(t.into())] += 1);
    let mut indptr = Vec::with_capacity(keys.len() + 1);
    indptr.push(0i64);
    for &c in &counts {
        let kept = cap.map_or(c, |cap| c.min(cap as i64));
        indptr.push(indptr.last().unwrap() + kept);
    }
    let mut filled: Vec<i64> = indptr[..keys.len()].to_vec();
    let mut rows = vec![0i64; *indptr.last().unwrap() as usize];
    let mut seen = vec![false; n];
    for &row in perm {
        if row < 0 || row as usize >= n || std::mem::replace(&mut seen[row as usize], true) {
            return Err(JtmError::InvalidArgument(format!(
                "perm is not a permutation of 0..{n} (row {row})"
            )));
        }
        let k = slot_of(targets[row as usize].into());
        if filled[k] < indptr[k + 1] {
            rows[filled[k] as usize] = row;
            filled[k] += 1;
        }
    }
    Ok(ItemSamples {
        keys,
        indptr,
        rows,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: a stable sort of the permuted targets, the first `cap` of each.
    fn by_sorting(targets: &[i64], perm: &[i64], cap: Option<usize>) -> ItemSamples {
        let mut order: Vec<i64> = perm.to_vec();
        order.sort_by_key(|&r| targets[r as usize]); // stable
        let (mut keys, mut indptr, mut rows, mut counts) = (vec![], vec![0i64], vec![], vec![]);
        let mut i = 0;
        while i < order.len() {
            let t = targets[order[i] as usize];
            let j = i + order[i..]
                .iter()
                .take_while(|&&r| targets[r as usize] == t)
                .count();
            let take = cap.map_or(j - i, |c| c.min(j - i));
            keys.push(t);
            counts.push((j - i) as i64);
            rows.extend_from_slice(&order[i..i + take]);
            indptr.push(rows.len() as i64);
            i = j;
        }
        ItemSamples {
            keys,
            indptr,
            rows,
            counts,
        }
    }

    #[test]
    fn equals_a_stable_sort_of_the_permutation() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        for (n, range) in [(1usize, 1u64), (50, 7), (2000, 300), (3000, 1 << 40)] {
            let targets: Vec<i64> = (0..n).map(|_| (next() % range) as i64).collect();
            let mut perm: Vec<i64> = (0..n as i64).collect();
            for i in (1..n).rev() {
                perm.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            for cap in [None, Some(1), Some(2), Some(8)] {
                let got = item_samples(&targets, &perm, cap).unwrap();
                assert_eq!(
                    got,
                    by_sorting(&targets, &perm, cap),
                    "n {n} range {range} cap {cap:?}"
                );
            }
            let narrow: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
            if range < 1 << 31 {
                assert_eq!(
                    item_samples(&narrow, &perm, Some(2)).unwrap(),
                    item_samples(&targets, &perm, Some(2)).unwrap()
                );
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_permutation_or_an_id() {
        assert!(item_samples(&[0i64, 1], &[0, 0], None).is_err());
        assert!(item_samples(&[0i64, 1], &[0, 2], None).is_err());
        assert!(item_samples(&[0i64, 1], &[0], None).is_err());
        assert!(item_samples(&[0i64, -1], &[0, 1], None).is_err());
        assert!(item_samples(&[0i64, 1], &[1, 0], Some(0)).is_err());
        let empty = item_samples::<i64>(&[], &[], Some(2)).unwrap();
        assert_eq!(empty.indptr, vec![0]);
    }
}
