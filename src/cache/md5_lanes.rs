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
//! With AVX-512 (whose rotate and three-input logic instructions fit MD5's steps) sixteen
//! files go side by side in a 512-bit register.
//!
//! [`md5_many`] takes whole messages in memory. Messages are hashed a register's lanes at a
//! time, in order of length so that lanes finish together; a lane whose message has ended is
//! fed a dummy block and its state left as it was. Without AVX2 (or for a single message) each
//! message is hashed by `md-5`, one after another.

// Elsewhere than on x86-64 only `md-5` is used.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use md5::{Digest, Md5};
use std::sync::LazyLock;

/// A raw MD5 digest.
pub type Md5Digest = [u8; 16];

/// The ways this CPU can hash several messages at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Sixteen lanes of 32 bits (AVX-512F).
    Avx512,
    /// Eight lanes of 32 bits (AVX2).
    Avx2,
    /// One message after another, by `md-5`.
    OneByOne,
}

impl Kernel {
    fn best() -> Kernel {
        static BEST: LazyLock<Kernel> = LazyLock::new(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Kernel::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    return Kernel::Avx2;
                }
            }
            Kernel::OneByOne
        });
        *BEST
    }
}

/// The MD5 of each message, in the order given.
pub fn md5_many(messages: &[&[u8]]) -> Vec<Md5Digest> {
    md5_with(Kernel::best(), messages)
}

fn md5_with(kernel: Kernel, messages: &[&[u8]]) -> Vec<Md5Digest> {
    match kernel {
        // SAFETY (both): `Kernel::best` found the instructions on this CPU.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 if messages.len() > 1 => {
            in_lanes::<16>(messages, &|s, b| unsafe { x86::compress16(s, b, &K) })
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if messages.len() > 1 => {
            in_lanes::<8>(messages, &|s, b| unsafe { x86::compress8(s, b, &K) })
        }
        _ => messages.iter().map(|m| md5_one(m)).collect(),
    }
}

/// The MD5 of one message, by `md-5`.
pub fn md5_one(message: &[u8]) -> Md5Digest {
    Md5::digest(message).into()
}

/// One block's compression in each of `N` lanes: the states after it.
type Compress<'a, const N: usize> = dyn Fn(&[[u32; 4]; N], &[&[u8]; N]) -> [[u32; 4]; N] + 'a;

/// Hashes `messages` `N` at a time with `compress`.
fn in_lanes<const N: usize>(messages: &[&[u8]], compress: &Compress<N>) -> Vec<Md5Digest> {
    let mut out = vec![[0u8; 16]; messages.len()];
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by_key(|&i| messages[i].len());
    let dummy = [0u8; 64];
    for group in order.chunks(N) {
        let padded: Vec<Padded> = group.iter().map(|&i| Padded::new(messages[i])).collect();
        let most = padded.iter().map(|p| p.blocks).max().unwrap_or(0);
        let mut state = [INIT; N];
        let mut blocks: [&[u8]; N] = [&dummy; N];
        for b in 0..most {
            for (lane, p) in padded.iter().enumerate() {
                blocks[lane] = if b < p.blocks { p.block(b) } else { &dummy };
            }
            let next = compress(&state, &blocks);
            for (lane, p) in padded.iter().enumerate() {
                if b < p.blocks {
                    state[lane] = next[lane];
                }
            }
        }
        for (&i, s) in group.iter().zip(state) {
            for (w, word) in s.iter().enumerate() {
                out[i][w * 4..w * 4 + 4].copy_from_slice(&word.to_le_bytes());
            }
        }
    }
    out
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

/// Word `w` of every lane's block, for each of the 16 words: `[w][lane]`.
fn words<const N: usize>(blocks: &[&[u8]; N]) -> [[u32; N]; 16] {
    std::array::from_fn(|w| {
        std::array::from_fn(|lane| {
            let b = &blocks[lane][w * 4..w * 4 + 4];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
    })
}

/// The 64 steps of RFC 1321 (3.4), given `step!(fun, a, b, c, d, word, constant, shift)` and
/// the four round functions.
macro_rules! md5_rounds {
    ($step:ident, $f:ident, $g:ident, $h:ident, $i:ident, $a:ident, $b:ident, $c:ident, $d:ident) => {
        for j in 0..4 {
            let t = 4 * j;
            $step!($f, $a, $b, $c, $d, t, t, 7);
            $step!($f, $d, $a, $b, $c, t + 1, t + 1, 12);
            $step!($f, $c, $d, $a, $b, t + 2, t + 2, 17);
            $step!($f, $b, $c, $d, $a, t + 3, t + 3, 22);
        }
        for j in 0..4 {
            let t = 16 + 4 * j;
            $step!($g, $a, $b, $c, $d, (5 * t + 1) % 16, t, 5);
            $step!($g, $d, $a, $b, $c, (5 * (t + 1) + 1) % 16, t + 1, 9);
            $step!($g, $c, $d, $a, $b, (5 * (t + 2) + 1) % 16, t + 2, 14);
            $step!($g, $b, $c, $d, $a, (5 * (t + 3) + 1) % 16, t + 3, 20);
        }
        for j in 0..4 {
            let t = 32 + 4 * j;
            $step!($h, $a, $b, $c, $d, (3 * t + 5) % 16, t, 4);
            $step!($h, $d, $a, $b, $c, (3 * (t + 1) + 5) % 16, t + 1, 11);
            $step!($h, $c, $d, $a, $b, (3 * (t + 2) + 5) % 16, t + 2, 16);
            $step!($h, $b, $c, $d, $a, (3 * (t + 3) + 5) % 16, t + 3, 23);
        }
        for j in 0..4 {
            let t = 48 + 4 * j;
            $step!($i, $a, $b, $c, $d, (7 * t) % 16, t, 6);
            $step!($i, $d, $a, $b, $c, (7 * (t + 1)) % 16, t + 1, 10);
            $step!($i, $c, $d, $a, $b, (7 * (t + 2)) % 16, t + 2, 15);
            $step!($i, $b, $c, $d, $a, (7 * (t + 3)) % 16, t + 3, 21);
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::words;
    use std::arch::x86_64::*;

    /// State word `i` of every lane, as one vector's elements.
    fn state_word<const N: usize>(state: &[[u32; 4]; N], i: usize) -> [u32; N] {
        std::array::from_fn(|lane| state[lane][i])
    }

    /// The four state words' vectors back into each lane's state.
    fn to_states<const N: usize>(words: [[u32; N]; 4]) -> [[u32; 4]; N] {
        std::array::from_fn(|lane| std::array::from_fn(|i| words[i][lane]))
    }

    /// One MD5 compression of one block in each of eight lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn compress8(
        state: &[[u32; 4]; 8],
        blocks: &[&[u8]; 8],
        k: &[u32; 64],
    ) -> [[u32; 4]; 8] {
        // SAFETY (every load and store here): each array is 32 bytes, one vector, and the
        // loads and stores are unaligned.
        let load = |v: &[u32; 8]| unsafe { _mm256_loadu_si256(v.as_ptr().cast()) };
        let m = words(blocks).map(|w| load(&w));
        let [a0, b0, c0, d0] = [0, 1, 2, 3].map(|i| load(&state_word(state, i)));
        let ones = _mm256_set1_epi32(-1);
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        // F = (x & y) | (!x & z), as z ^ (x & (y ^ z)); G = (x & z) | (y & !z), as
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
        md5_rounds!(step, f, g, h, i, a, b, c, d);
        let mut out = [[0u32; 8]; 4];
        let sums = [(a, a0), (b, b0), (c, c0), (d, d0)];
        for (o, (x, x0)) in out.iter_mut().zip(sums) {
            unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), _mm256_add_epi32(x, x0)) };
        }
        to_states(out)
    }

    /// One MD5 compression of one block in each of sixteen lanes: each round function is one
    /// three-input logic instruction (its truth table over x = 0xF0, y = 0xCC, z = 0xAA), each
    /// rotation one instruction.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn compress16(
        state: &[[u32; 4]; 16],
        blocks: &[&[u8]; 16],
        k: &[u32; 64],
    ) -> [[u32; 4]; 16] {
        // SAFETY (every load and store here): each array is 64 bytes, one vector, and the
        // loads and stores are unaligned.
        let load = |v: &[u32; 16]| unsafe { _mm512_loadu_si512(v.as_ptr().cast()) };
        let m = words(blocks).map(|w| load(&w));
        let [a0, b0, c0, d0] = [0, 1, 2, 3].map(|i| load(&state_word(state, i)));
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        // F = (x & y) | (!x & z): 0xCA; G = (x & z) | (y & !z): 0xE4; H = x ^ y ^ z: 0x96;
        // I = y ^ (x | !z): 0x39.
        macro_rules! f {
            ($x:expr, $y:expr, $z:expr) => {
                _mm512_ternarylogic_epi32::<0xCA>($x, $y, $z)
            };
        }
        macro_rules! g {
            ($x:expr, $y:expr, $z:expr) => {
                _mm512_ternarylogic_epi32::<0xE4>($x, $y, $z)
            };
        }
        macro_rules! h {
            ($x:expr, $y:expr, $z:expr) => {
                _mm512_ternarylogic_epi32::<0x96>($x, $y, $z)
            };
        }
        macro_rules! i {
            ($x:expr, $y:expr, $z:expr) => {
                _mm512_ternarylogic_epi32::<0x39>($x, $y, $z)
            };
        }
        macro_rules! step {
            ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $w:expr, $t:expr, $s:literal) => {
                let sum = _mm512_add_epi32(
                    _mm512_add_epi32($a, $fun!($b, $c, $d)),
                    _mm512_add_epi32(m[$w], _mm512_set1_epi32(k[$t] as i32)),
                );
                $a = _mm512_add_epi32($b, _mm512_rol_epi32::<$s>(sum));
            };
        }
        md5_rounds!(step, f, g, h, i, a, b, c, d);
        let mut out = [[0u32; 16]; 4];
        let sums = [(a, a0), (b, b0), (c, c0), (d, d0)];
        for (o, (x, x0)) in out.iter_mut().zip(sums) {
            unsafe { _mm512_storeu_si512(o.as_mut_ptr().cast(), _mm512_add_epi32(x, x0)) };
        }
        to_states(out)
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

    /// Every way of hashing this CPU has (the tests check each, not just the best).
    fn kernels() -> Vec<Kernel> {
        let mut all = vec![Kernel::OneByOne];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                all.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Kernel::Avx512);
            }
        }
        all
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
        for kernel in kernels() {
            let got = md5_with(kernel, &refs);
            for (m, d) in messages.iter().zip(&got) {
                assert_eq!(*d, md5_one(m), "{kernel:?}, length {}", m.len());
            }
            // Known answers (RFC 1321 A.5).
            let abc = md5_with(kernel, &[b"", b"abc", b"message digest"]);
            assert_eq!(hex::encode(abc[0]), "d41d8cd98f00b204e9800998ecf8427e");
            assert_eq!(hex::encode(abc[1]), "900150983cd24fb0d6963f7d28e17f72");
            assert_eq!(hex::encode(abc[2]), "f96b697d7cb7938d525a2f31aaf161d0");
        }
    }

    #[test]
    fn groups_of_every_size_keep_their_order() {
        for (kernel, n) in kernels()
            .into_iter()
            .flat_map(|k| (1..=33).map(move |n| (k, n)))
        {
            let messages: Vec<Vec<u8>> = (0..n)
                .map(|i| bytes(1000 + 37 * (n - i), i as u32))
                .collect();
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let want: Vec<Md5Digest> = messages.iter().map(|m| md5_one(m)).collect();
            assert_eq!(md5_with(kernel, &refs), want, "{kernel:?}, {n} messages");
        }
    }
}
