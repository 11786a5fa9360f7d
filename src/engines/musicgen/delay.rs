//! MusicGen's codebook delay pattern: codebook `k` is shifted right by `k` steps, so at each step the model
//! predicts frame `t` of codebook 0, frame `t-1` of codebook 1, …, each conditioned on the coarser codebooks
//! of the same frame. Empty cells (before a codebook starts, after it ends) hold the pad id.
//!
//! Reference: transformers `MusicgenForCausalLM.build_delay_pattern_mask` / `apply_delay_pattern_mask`, and the
//! final "revert" in `MusicgenForConditionalGeneration.generate` (drop the pad ids); audiocraft
//! `modules/codebooks_patterns.py` (`DelayedPatternProvider`). Mono (one channel of codebooks) only.

/// The pattern for one generation window: a `[codebooks, len]` grid where `Some(id)` cells are fixed (pads
/// and prompt codes) and `None` cells are for the model to fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayPattern {
    codebooks: usize,
    len: usize,
    pad: u32,
    cells: Vec<Option<u32>>,
}

impl DelayPattern {
    /// `build_delay_pattern_mask`: `prefix` is each codebook's known sequence *including* the leading start
    /// id (the BOS then any prompt frames), `len` the window's total length (frames + codebooks).
    /// Returns `None` when `len < 2·codebooks − 1` (the reference then applies no pattern at all).
    pub fn new(prefix: &[Vec<u32>], pad: u32, len: usize) -> Option<Self> {
        let codebooks = prefix.len();
        if codebooks == 0 || len < 2 * codebooks - 1 {
            return None;
        }
        let mut cells = vec![None; codebooks * len];
        for (k, seq) in prefix.iter().enumerate() {
            for (i, &id) in seq.iter().enumerate() {
                let j = k + i;
                if j < len {
                    cells[k * len + j] = Some(id);
                }
            }
            // BOS padding: the lower triangle j <= k; EOS padding: j >= len - codebooks + 1 + k
            for j in 0..len {
                if j <= k || j + codebooks > len + k {
                    cells[k * len + j] = Some(pad);
                }
            }
        }
        Some(Self {
            codebooks,
            len,
            pad,
            cells,
        })
    }

    pub fn codebooks(&self) -> usize {
        self.codebooks
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fixed id at codebook `k`, column `j`, if any.
    pub fn fixed(&self, k: usize, j: usize) -> Option<u32> {
        self.cells.get(k * self.len + j).copied().flatten()
    }

    /// The first column with a cell to predict in codebook 0: the prefix fed before sampling starts.
    pub fn first_free(&self) -> usize {
        (0..self.len)
            .find(|&j| self.fixed(0, j).is_none())
            .unwrap_or(self.len)
    }

    /// The reference's pattern mask: fixed ids, −1 where the model predicts.
    pub fn mask(&self) -> Vec<Vec<i64>> {
        (0..self.codebooks)
            .map(|k| {
                (0..self.len)
                    .map(|j| self.fixed(k, j).map_or(-1, i64::from))
                    .collect()
            })
            .collect()
    }

    /// The known columns `0..first_free()` (what the reference returns as `input_ids`).
    pub fn prefix(&self) -> Vec<Vec<u32>> {
        let n = self.first_free();
        (0..self.codebooks)
            .map(|k| {
                (0..n)
                    .map(|j| self.fixed(k, j).unwrap_or(self.pad))
                    .collect()
            })
            .collect()
    }

    /// `apply_delay_pattern_mask`: fixed cells override `ids` (each row at most `len` long).
    pub fn apply(&self, ids: &mut [Vec<u32>]) {
        for (k, row) in ids.iter_mut().enumerate().take(self.codebooks) {
            for (j, id) in row.iter_mut().enumerate().take(self.len) {
                if let Some(f) = self.fixed(k, j) {
                    *id = f;
                }
            }
        }
    }

    /// Undoes the delay: frame `f` of codebook `k` sits at column `f + 1 + k`. A full grid (`len` columns)
    /// gives `len - codebooks` frames per codebook, the same as the reference's pad filtering (model outputs
    /// never equal the pad id, which is one past the vocabulary).
    pub fn revert(&self, ids: &[Vec<u32>]) -> Vec<Vec<u32>> {
        let frames = self.len.saturating_sub(self.codebooks);
        ids.iter()
            .enumerate()
            .map(|(k, row)| {
                let start = (k + 1).min(row.len());
                let end = (k + 1 + frames).min(row.len());
                row[start..end].to_vec()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_prompt_matches_reference_docstring() {
        // transformers' docstring example: 4 codebooks, max length 8
        let p = DelayPattern::new(&vec![vec![9]; 4], 9, 8).unwrap();
        let m = p.mask();
        assert_eq!(m[0], vec![9, -1, -1, -1, -1, 9, 9, 9]);
        assert_eq!(m[1], vec![9, 9, -1, -1, -1, -1, 9, 9]);
        assert_eq!(m[2], vec![9, 9, 9, -1, -1, -1, -1, 9]);
        assert_eq!(m[3], vec![9, 9, 9, 9, -1, -1, -1, -1]);
        assert_eq!(p.first_free(), 1);
        assert_eq!(p.prefix(), vec![vec![9]; 4]);
    }

    #[test]
    fn revert_undoes_the_shift() {
        let p = DelayPattern::new(&vec![vec![99]; 3], 99, 7).unwrap();
        // frames 0..4 of codebook k are 10k + f
        let mut ids = vec![vec![0u32; 7]; 3];
        for (k, row) in ids.iter_mut().enumerate() {
            for f in 0..4 {
                row[f + 1 + k] = (10 * k + f) as u32;
            }
        }
        p.apply(&mut ids);
        let frames = p.revert(&ids);
        for (k, row) in frames.iter().enumerate() {
            assert_eq!(
                row,
                &(0..4).map(|f| (10 * k + f) as u32).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn too_short_gives_no_pattern() {
        assert!(DelayPattern::new(&vec![vec![9]; 4], 9, 6).is_none());
        assert!(DelayPattern::new(&[], 9, 6).is_none());
    }
}
