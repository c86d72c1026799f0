//! RFC 6962 Merkle tree hashing over log entries: leaf and node hashes with domain separation,
//! an append-only compact range for running roots, inclusion and consistency proofs and their
//! verification. Pure: no I/O.

use ring::digest::{digest, Context, SHA256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Domain-separation prefix of a leaf hash (RFC 6962 §2.1).
pub const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash.
pub const NODE_PREFIX: u8 = 0x01;

fn finish(c: Context) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(c.finish().as_ref());
    h
}

/// SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[LEAF_PREFIX]);
    c.update(data);
    finish(c)
}

/// SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[NODE_PREFIX]);
    c.update(left);
    c.update(right);
    finish(c)
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(digest(&SHA256, b"").as_ref());
    h
}

/// The largest power of two strictly less than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH over leaf hashes (RFC 6962 §2.1).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The running root of an append-only log in O(log n) memory: the roots of its perfect subtrees.
#[derive(Debug, Clone, Default)]
pub struct CompactRange {
    size: u64,
    /// Perfect-subtree roots, largest first.
    peaks: Vec<Hash>,
}

impl CompactRange {
    /// Number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        // Merge equal-sized subtrees: one merge per trailing 1 bit of the old size.
        while s & 1 == 1 {
            let left = self.peaks.pop().unwrap_or(h);
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// The hash of the perfect subtree over leaves `lo..hi`, if it is one of this range's peaks.
    fn peak(&self, lo: u64, hi: u64) -> Option<Hash> {
        // Peaks are the subtrees of the set bits of `size`, largest first.
        let mut start = 0u64;
        let mut i = 0usize;
        for bit in (0..64).rev() {
            let width = 1u64 << bit;
            if self.size & width == 0 {
                continue;
            }
            if start == lo && start + width == hi {
                return self.peaks.get(i).copied();
            }
            start += width;
            i += 1;
        }
        None
    }

    /// The tree root at the current size.
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, p| node_hash(p, &acc)),
        }
    }
}

/// Inclusion proofs for the leaves just appended, made from the tree as it was before them and
/// their hashes alone: the log's writer keeps no earlier leaf, only the compact range.
///
/// Every sibling left of a new leaf's path is either one of `before`'s perfect subtrees or
/// spans the new leaves, and every sibling right of it is made of new leaves, so nothing else
/// is needed. Node hashes are remembered across proofs, so proving every leaf of a group costs
/// about one pass over the group.
#[derive(Debug)]
pub struct GroupProver<'a> {
    before: &'a CompactRange,
    new: &'a [Hash],
    memo: std::collections::HashMap<(u64, u64), Hash>,
}

impl<'a> GroupProver<'a> {
    /// A prover for the tree of `before` followed by `new`.
    pub fn new(before: &'a CompactRange, new: &'a [Hash]) -> Self {
        GroupProver { before, new, memo: std::collections::HashMap::new() }
    }

    /// The audit path of leaf `index` (absolute) in the whole tree. Requires
    /// `before.size() <= index < before.size() + new.len()`; checks it first.
    pub fn prove(&mut self, index: u64) -> Result<Vec<Hash>, ProofError> {
        let size = self.before.size() + self.new.len() as u64;
        if index < self.before.size() || index >= size {
            return Err(ProofError::OutOfRange { index, size });
        }
        let mut out = Vec::new();
        let (mut lo, mut hi) = (0u64, size);
        // RFC 6962 PATH(m, D[lo:hi]) top-down: siblings come out root first, so reverse.
        while hi - lo > 1 {
            let k = split((hi - lo) as usize) as u64;
            if index < lo + k {
                out.push(self.mth(lo + k, hi));
                hi = lo + k;
            } else {
                out.push(self.mth(lo, lo + k));
                lo += k;
            }
        }
        out.reverse();
        Ok(out)
    }

    /// MTH(D[lo:hi]) for a range that is one of `before`'s perfect subtrees, lies within the
    /// new leaves, or splits into those.
    fn mth(&mut self, lo: u64, hi: u64) -> Hash {
        let g = self.before.size();
        if hi - lo == 1 && lo >= g {
            return self.new[(lo - g) as usize];
        }
        if let Some(h) = self.before.peak(lo, hi).or_else(|| self.memo.get(&(lo, hi)).copied()) {
            return h;
        }
        let k = split((hi - lo) as usize) as u64;
        let h = node_hash(&self.mth(lo, lo + k), &self.mth(lo + k, hi));
        self.memo.insert((lo, hi), h);
        h
    }
}

/// Why a proof did not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index is not below the tree size.
    #[error("entry {index} is not in a tree of {size} entries")]
    OutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The proof has the wrong number of hashes.
    #[error("proof has {got} hashes, expected {want}")]
    Length {
        /// Given.
        got: usize,
        /// Needed.
        want: usize,
    },
    /// The recomputed root differs.
    #[error("proof does not lead to the checkpoint's root")]
    Mismatch,
}

/// The audit path of leaf `index` in the tree over `leaves` (RFC 6962 §2.1.1).
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Result<Vec<Hash>, ProofError> {
    if index >= leaves.len() {
        return Err(ProofError::OutOfRange { index: index as u64, size: leaves.len() as u64 });
    }
    let mut out = Vec::new();
    path(leaves, index, &mut out);
    Ok(out)
}

fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(&leaves[..k], m, out);
        out.push(root(&leaves[k..]));
    } else {
        path(&leaves[k..], m - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// Checks that `leaf` is entry `index` of the tree of `size` entries with root `want`.
/// Requires `index < size`; checks it first.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    want: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    // RFC 9162 §2.1.3.2.
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::Length { got: proof.len(), want: proof.len() - 1 });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::Length { got: proof.len(), want: proof.len() + 1 });
    }
    if &r == want {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// The consistency proof from the tree of size `m` to the tree over `leaves` (RFC 6962 §2.1.2).
pub fn consistency_proof(leaves: &[Hash], m: usize) -> Vec<Hash> {
    let mut out = Vec::new();
    if m > 0 && m < leaves.len() {
        subproof(leaves, m, true, &mut out);
    }
    out
}

fn subproof(leaves: &[Hash], m: usize, complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(&leaves[..k], m, complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(&leaves[k..], m - k, false, out);
        out.push(root(&leaves[..k]));
    }
}

/// Checks a consistency proof between (size1, root1) and (size2, root2) (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::OutOfRange { index: size1, size: size2 });
    }
    if size1 == size2 {
        return if proof.is_empty() && root1 == root2 { Ok(()) } else { Err(ProofError::Mismatch) };
    }
    if size1 == 0 {
        return if proof.is_empty() { Ok(()) } else { Err(ProofError::Length { got: proof.len(), want: 0 }) };
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if size1.is_power_of_two() {
        path.insert(0, *root1);
    }
    let Some((first, rest)) = path.split_first() else { return Err(ProofError::Length { got: 0, want: 1 }) };
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::Length { got: proof.len(), want: proof.len() - 1 });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::Length { got: proof.len(), want: proof.len() + 1 });
    }
    if &fr == root1 && &sr == root2 {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(h: &Hash) -> String {
        fedgate_catalog::hex(h)
    }

    /// RFC 6962 reference inputs; roots reproduced with:
    /// python3 -c 'import hashlib as h;L=lambda d:h.sha256(b"\0"+d).digest();N=lambda a,b:h.sha256(b"\1"+a+b).digest()
    /// def M(x):
    ///  n=len(x);k=1
    ///  if n==1:return L(x[0])
    ///  while k*2<n:k*=2
    ///  return N(M(x[:k]),M(x[k:]))
    /// I=[b"",b"\0",b"\x10",b" !",b"01",b"@ABC",bytes(range(80,88)),bytes(range(96,112))]
    /// [print(M(I[:i]).hex()) for i in range(1,9)]'
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn inputs() -> Vec<Vec<u8>> {
        vec![
            vec![],
            vec![0x00],
            vec![0x10],
            vec![0x20, 0x21],
            vec![0x30, 0x31],
            vec![0x40, 0x41, 0x42, 0x43],
            (0x50..0x58).collect(),
            (0x60..0x70).collect(),
        ]
    }

    #[test]
    fn reference_roots() {
        let leaves: Vec<Hash> = inputs().iter().map(|d| leaf_hash(d)).collect();
        let mut cr = CompactRange::default();
        assert_eq!(hex(&cr.root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        for (i, want) in ROOTS.iter().enumerate() {
            assert_eq!(hex(&root(&leaves[..=i])), *want, "size {}", i + 1);
            cr.push(leaves[i]);
            assert_eq!(hex(&cr.root()), *want, "compact range at size {}", i + 1);
        }
    }

    #[test]
    fn leaf_and_node_hashes_cannot_collide() {
        // A node over (a, b) never equals a leaf whose data is a || b.
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut concat = a.to_vec();
        concat.extend_from_slice(&b);
        assert_ne!(node_hash(&a, &b), leaf_hash(&concat));
    }

    #[test]
    fn proofs_for_appended_leaves_match_the_reference_proofs() {
        let leaves: Vec<Hash> = (0..40u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=leaves.len() {
            for g in 0..n {
                let mut before = CompactRange::default();
                leaves[..g].iter().for_each(|h| before.push(*h));
                for i in g..n {
                    let fast = GroupProver::new(&before, &leaves[g..n]).prove(i as u64).unwrap();
                    assert_eq!(
                        fast,
                        inclusion_proof(&leaves[..n], i).unwrap(),
                        "leaf {i} of {n}, {g} before"
                    );
                }
                // One prover for every leaf of the group gives the same proofs.
                let mut prover = GroupProver::new(&before, &leaves[g..n]);
                for i in g..n {
                    assert_eq!(prover.prove(i as u64).unwrap(), inclusion_proof(&leaves[..n], i).unwrap());
                }
                assert!(prover.prove(n as u64).is_err());
                if g > 0 {
                    assert!(prover.prove(g as u64 - 1).is_err());
                }
            }
        }
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies_and_tampering_fails() {
        let leaves: Vec<Hash> = (0..40u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=leaves.len() {
            let r = root(&leaves[..n]);
            for i in 0..n {
                let p = inclusion_proof(&leaves[..n], i).unwrap();
                verify_inclusion(&leaves[i], i as u64, n as u64, &p, &r).unwrap();
                assert!(
                    verify_inclusion(&leaves[(i + 1) % n], i as u64, n as u64, &p, &r).is_err() || n == 1
                );
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0] = leaf_hash(first);
                    assert!(verify_inclusion(&leaves[i], i as u64, n as u64, &bad, &r).is_err());
                    assert!(
                        verify_inclusion(&leaves[i], i as u64, n as u64, &p[1..], &r).is_err(),
                        "truncated proof"
                    );
                }
            }
            for m in 0..=n {
                let p = consistency_proof(&leaves[..n], m);
                let r1 = root(&leaves[..m]);
                verify_consistency(m as u64, n as u64, &p, &r1, &r)
                    .unwrap_or_else(|e| panic!("{m}->{n}: {e}"));
                if m > 0 && m < n {
                    let wrong = root(&leaves[1..=m]);
                    assert!(verify_consistency(m as u64, n as u64, &p, &wrong, &r).is_err());
                }
            }
        }
    }
}
