//! The MD5 of many whole files at once, eight to a core.
//!
//! One MD5 is a chain: each 64-byte block needs the state the block before it left, so a
//! single file is hashed at one block at a time, about 0.7 GB/s on one core here, and on a
//! small machine that is most of a prefetch's CPU (a DICOM series is thousands of files of a
//! few hundred KiB, each checked against XNAT's listed digest). Files are independent of each
//! other, though: with AVX2 the same steps run for eight files side by side, one in each 32-bit
//! lane of a 256-bit register ("multi-buffer" hashing). No maintained crate offers this (the
//! `md-5` crate hashes one message at a time), hence this module, written from RFC 1321 and
//! checked against `md-5` for every length class in its tests.
//!
//! [`md5_many`] takes whole messages in memory. Messages are hashed eight at a time, in order of
//! length so that lanes finish together; a lane whose message has ended is fed a dummy block
//! and its state left as it was. Without AVX2 (or for a single message) each message is hashed
//! by `md-5`, one after another.

use md5::{Digest, Md5};
use std::sync::LazyLock;

/// A raw MD5 digest.
pub type Md5Digest = [u8; 16];

const LANES: usize = 8;

/// The MD5 of each message, in the order given.
pub fn md5_many(messages: &[&[u8]]) -> Vec<Md5Digest> {
    #[cfg(target_arch = "x86_64")]
    if messages.len() > 1 && std::arch::is_x86_feature_detected!("avx2") {
        let mut out = vec![[0u8; 16]; messages.len()];
        let mut order: Vec<usize> = (0..messages.len()).collect();
        order.sort_by_key(|&i| messages[i].len());
        for group in order.chunks(LANES) {
            let lanes: Vec<&[u8]> = group.iter().map(|&i| messages[i]).collect();
            // SAFETY: AVX2 is present (checked above).
            let digests = unsafe { x86::md5_lanes(&lanes) };
            for (&i, d) in group.iter().zip(digests) {
                out[i] = d;
            }
        }
        return out;
    }
    messages.iter().map(|m| md5_one(m)).collect()
}

/// The MD5 of one message, by `md-5`.
pub fn md5_one(message: &[u8]) -> Md5Digest {
    Md5::digest(message).into()
}

/// The per-step constants of RFC 1321 (3.4): the integer part of 2^32 · |sin(i + 1)|, which
/// a double computes exactly for every i < 64 (the tests check the whole hash).
static K: LazyLock<[u32; 64]> = LazyLock::new(|| {
    std::array::from_fn(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
});

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// One message as a run of 64-byte blocks: its own bytes, then its padding (RFC 1321 3.1-3.2:
/// 0x80, zeros, the length in bits) in a tail of one or two blocks.
struct Padded<'a> {
    body: &'a [u8],
    /// Where the tail begins in the message (a multiple of 64).
    tail_at: usize,
    tail: [u8; 128],
    blocks: usize,
}

impl<'a> Padded<'a> {
    fn new(m: &'a [u8]) -> Padded<'a> {
        let tail_at = m.len() / 64 * 64;
        let rest = &m[tail_at..];
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let tail_len = if rest.len() < 56 { 64 } else { 128 };
        tail[tail_len - 8..tail_len].copy_from_slice(&((m.len() as u64) << 3).to_le_bytes());
        Padded {
            body: m,
            tail_at,
            tail,
            blocks: (tail_at + tail_len) / 64,
        }
    }

    /// Block `b` (< `self.blocks`).
    fn block(&self, b: usize) -> &[u8] {
        let at = b * 64;
        if at < self.tail_at {
            &self.body[at..at + 64]
        } else {
            &self.tail[at - self.tail_at..at - self.tail_at + 64]
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{INIT, K, LANES, Md5Digest, Padded};
    use std::arch::x86_64::*;

    /// The MD5 of up to eight messages, one per lane.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn md5_lanes(messages: &[&[u8]]) -> Vec<Md5Digest> {
        assert!(messages.len() <= LANES);
        let padded: Vec<Padded> = messages.iter().map(|m| Padded::new(m)).collect();
        let most = padded.iter().map(|p| p.blocks).max().unwrap_or(0);
        let dummy = [0u8; 64];
        let mut state = [INIT; LANES];
        let mut blocks: [&[u8]; LANES] = [&dummy; LANES];
        let k = &*K;
        for b in 0..most {
            for (lane, p) in padded.iter().enumerate() {
                blocks[lane] = if b < p.blocks { p.block(b) } else { &dummy };
            }
            let next = compress(&state, &blocks, k);
            for (lane, p) in padded.iter().enumerate() {
                if b < p.blocks {
                    state[lane] = next[lane];
                }
            }
        }
        state[..messages.len()]
            .iter()
            .map(|s| {
                let mut d = [0u8; 16];
                for (i, w) in s.iter().enumerate() {
                    d[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
                }
                d
            })
            .collect()
    }

    /// Word `w` of each lane's block, as one vector (lane i in element i).
    #[target_feature(enable = "avx2")]
    fn word(blocks: &[&[u8]; LANES], w: usize) -> __m256i {
        let at = |lane: usize| {
            let b = &blocks[lane][w * 4..w * 4 + 4];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i32
        };
        _mm256_setr_epi32(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7))
    }

    /// One MD5 compression (RFC 1321 3.4) of one block per lane.
    #[target_feature(enable = "avx2")]
    fn compress(
        state: &[[u32; 4]; LANES],
        blocks: &[&[u8]; LANES],
        k: &[u32; 64],
    ) -> [[u32; 4]; LANES] {
        let lanes = |i: usize| {
            _mm256_setr_epi32(
                state[0][i] as i32,
                state[1][i] as i32,
                state[2][i] as i32,
                state[3][i] as i32,
                state[4][i] as i32,
                state[5][i] as i32,
                state[6][i] as i32,
                state[7][i] as i32,
            )
        };
        let (a0, b0, c0, d0) = (lanes(0), lanes(1), lanes(2), lanes(3));
        let m: [__m256i; 16] = std::array::from_fn(|w| word(blocks, w));
        let ones = _mm256_set1_epi32(-1);
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);

        // F = (x & y) | (!x & z), written z ^ (x & (y ^ z)); G = (x & z) | (y & !z), written
        // y ^ (z & (x ^ y)); H = x ^ y ^ z; I = y ^ (x | !z).
        macro_rules! f {
            ($x:expr, $y:expr, $z:expr) => {
                _mm256_xor_si256($z, _mm256_and_si256($x, _mm256_xor_si256($y, $z)))
            };
        }
        macro_rules! g {
            ($x:expr, $y:expr, $z:expr) => {
                _mm256_xor_si256($y, _mm256_and_si256($z, _mm256_xor_si256($x, $y)))
            };
        }
        macro_rules! h {
            ($x:expr, $y:expr, $z:expr) => {
                _mm256_xor_si256(_mm256_xor_si256($x, $y), $z)
            };
        }
        macro_rules! i {
            ($x:expr, $y:expr, $z:expr) => {
                _mm256_xor_si256($y, _mm256_or_si256($x, _mm256_xor_si256($z, ones)))
            };
        }
        // a = b + ((a + fun(b, c, d) + M[w] + K[t]) <<< s)
        macro_rules! step {
            ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $w:expr, $t:expr, $s:literal) => {
                let sum = _mm256_add_epi32(
                    _mm256_add_epi32($a, $fun!($b, $c, $d)),
                    _mm256_add_epi32(m[$w], _mm256_set1_epi32(k[$t] as i32)),
                );
                let rotated = _mm256_or_si256(
                    _mm256_slli_epi32::<$s>(sum),
                    _mm256_srli_epi32::<{ 32 - $s }>(sum),
                );
                $a = _mm256_add_epi32($b, rotated);
            };
        }
        for j in 0..4 {
            let t = 4 * j;
            step!(f, a, b, c, d, t, t, 7);
            step!(f, d, a, b, c, t + 1, t + 1, 12);
            step!(f, c, d, a, b, t + 2, t + 2, 17);
            step!(f, b, c, d, a, t + 3, t + 3, 22);
        }
        for j in 0..4 {
            let t = 16 + 4 * j;
            step!(g, a, b, c, d, (5 * t + 1) % 16, t, 5);
            step!(g, d, a, b, c, (5 * (t + 1) + 1) % 16, t + 1, 9);
            step!(g, c, d, a, b, (5 * (t + 2) + 1) % 16, t + 2, 14);
            step!(g, b, c, d, a, (5 * (t + 3) + 1) % 16, t + 3, 20);
        }
        for j in 0..4 {
            let t = 32 + 4 * j;
            step!(h, a, b, c, d, (3 * t + 5) % 16, t, 4);
            step!(h, d, a, b, c, (3 * (t + 1) + 5) % 16, t + 1, 11);
            step!(h, c, d, a, b, (3 * (t + 2) + 5) % 16, t + 2, 16);
            step!(h, b, c, d, a, (3 * (t + 3) + 5) % 16, t + 3, 23);
        }
        for j in 0..4 {
            let t = 48 + 4 * j;
            step!(i, a, b, c, d, (7 * t) % 16, t, 6);
            step!(i, d, a, b, c, (7 * (t + 1)) % 16, t + 1, 10);
            step!(i, c, d, a, b, (7 * (t + 2)) % 16, t + 2, 15);
            step!(i, b, c, d, a, (7 * (t + 3)) % 16, t + 3, 21);
        }
        let sums = [
            _mm256_add_epi32(a, a0),
            _mm256_add_epi32(b, b0),
            _mm256_add_epi32(c, c0),
            _mm256_add_epi32(d, d0),
        ];
        let mut words = [[0i32; LANES]; 4];
        for (out, v) in words.iter_mut().zip(sums) {
            // SAFETY: `out` is 32 bytes, the size of one vector; the store is unaligned.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
        }
        std::array::from_fn(|lane| std::array::from_fn(|i| words[i][lane] as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_constants_are_rfc_1321s() {
        assert_eq!(K[0], 0xd76a_a478);
        assert_eq!(K[1], 0xe8c7_b756);
        assert_eq!(K[31], 0x8d2a_4c8a);
        assert_eq!(K[63], 0xeb86_d391);
    }

    #[test]
    fn every_length_class_matches_md5_one_message_at_a_time() {
        // Empty, under and over the 56-byte padding boundary, whole blocks, odd sizes, and a
        // few hundred KiB, mixed so that lanes end at different blocks.
        let lens = [
            0usize, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 65_535,
            262_144, 262_207, 300_001,
        ];
        let messages: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| bytes(n, i as u32))
            .collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let got = md5_many(&refs);
        for (m, d) in messages.iter().zip(&got) {
            assert_eq!(*d, md5_one(m), "length {}", m.len());
        }
        // Known answers (RFC 1321 A.5).
        let abc = md5_many(&[b"", b"abc", b"message digest"]);
        assert_eq!(hex::encode(abc[0]), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex::encode(abc[1]), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(hex::encode(abc[2]), "f96b697d7cb7938d525a2f31aaf161d0");
    }

    #[test]
    fn groups_of_every_size_keep_their_order() {
        for n in 1..=17 {
            let messages: Vec<Vec<u8>> = (0..n)
                .map(|i| bytes(1000 + 37 * (n - i), i as u32))
                .collect();
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let want: Vec<Md5Digest> = messages.iter().map(|m| md5_one(m)).collect();
            assert_eq!(md5_many(&refs), want, "{n} messages");
        }
    }
}
