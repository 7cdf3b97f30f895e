//! `--shard I/N`: one of N disjoint parts of the selected sessions, for many nodes (a Slurm
//! array) that prefetch one cohort into one shared cache or `--out`.
//!
//! A session belongs to the part its accession ID hashes to (MD5, the same on every machine
//! and build), not to its place in a listing: tasks that start hours apart agree on the split
//! even if sessions were added to the project in between (a new session lands in exactly one
//! part), and nothing depends on the order XNAT lists sessions in. I counts from 0 (0..N-1,
//! as Slurm's `--array=0-9` numbers tasks); an array numbered otherwise is caught when the
//! task's own `SLURM_ARRAY_TASK_*` variables show it (see [`Shard::check_slurm`]).

use md5::{Digest, Md5};

/// Part `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// How `--shard` is used, for its errors.
const USAGE: &str = "--shard takes I/N: part I of N, with I from 0 to N-1 \
     (in a Slurm array --array=0-<N-1>: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)";

impl Shard {
    /// Parses `I/N` (0 <= I < N). Used as clap's value parser: the error is a usage error.
    pub fn parse(spec: &str) -> Result<Shard, String> {
        let Some((i, n)) = spec.split_once('/') else {
            return Err(format!("{spec:?}: {USAGE}"));
        };
        let (Ok(index), Ok(count)) = (i.trim().parse::<u64>(), n.trim().parse::<u64>()) else {
            return Err(format!("{spec:?}: {USAGE}"));
        };
        if count == 0 {
            return Err(format!("{spec:?}: N must be at least 1; {USAGE}"));
        }
        if index >= count {
            return Err(format!(
                "{spec:?}: I counts from 0 to {} (N-1); for a Slurm array numbered 1..N use \
                 --shard $((SLURM_ARRAY_TASK_ID-1))/$SLURM_ARRAY_TASK_COUNT, or number it --array=0-{}",
                count - 1,
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether the session with accession ID `session_id` is in this part.
    pub fn contains(&self, session_id: &str) -> bool {
        part_of(session_id, self.count) == self.index
    }

    /// When I and N are this Slurm array task's own ID and task count (`slurm`: the values
    /// of `SLURM_ARRAY_TASK_ID`, `_COUNT`, `_MIN`, `_MAX`), the array's IDs must run 0..N-1
    /// one by one: otherwise some part would be nobody's (an array 1-10 leaves part 0 out, one
    /// with a step skips parts). Every task of such an array gets this error, not just some.
    pub fn check_slurm(&self, slurm: &SlurmArray) -> Result<(), String> {
        let (Some(id), Some(count)) = (slurm.id, slurm.count) else {
            return Ok(());
        };
        if id != self.index || count != self.count {
            return Ok(());
        }
        let (min, max) = (slurm.min.unwrap_or(0), slurm.max.unwrap_or(count - 1));
        if min == 0 && max + 1 == count {
            return Ok(());
        }
        Err(format!(
            "--shard {}/{}: this Slurm array's task IDs run {min}..{max} ({count} tasks), but \
             --shard counts parts from 0 to N-1, so some part would be left out; number the \
             array --array=0-{} or pass --shard $((SLURM_ARRAY_TASK_ID-{min}))/$SLURM_ARRAY_TASK_COUNT",
            self.index,
            self.count,
            count - 1
        ))
    }
}

/// The part (0..count) a session's accession ID falls in.
pub fn part_of(session_id: &str, count: u64) -> u64 {
    let digest = Md5::digest(session_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % count.max(1)
}

/// A Slurm array task's numbering, from its environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlurmArray {
    pub id: Option<u64>,
    pub count: Option<u64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
}

impl SlurmArray {
    pub fn from_env() -> SlurmArray {
        let var = |name: &str| std::env::var(name).ok()?.trim().parse::<u64>().ok();
        SlurmArray {
            id: var("SLURM_ARRAY_TASK_ID"),
            count: var("SLURM_ARRAY_TASK_COUNT"),
            min: var("SLURM_ARRAY_TASK_MIN"),
            max: var("SLURM_ARRAY_TASK_MAX"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_disjoint_cover_everything_and_are_balanced() {
        let ids: Vec<String> = (1..=2000).map(|n| format!("XNAT_E{n:05}")).collect();
        for n in [1u64, 2, 3, 7, 16] {
            let shards: Vec<Shard> = (0..n)
                .map(|i| Shard::parse(&format!("{i}/{n}")).unwrap())
                .collect();
            let mut sizes = vec![0usize; n as usize];
            for id in &ids {
                let owners: Vec<u64> = shards
                    .iter()
                    .filter(|s| s.contains(id))
                    .map(|s| s.index)
                    .collect();
                assert_eq!(owners.len(), 1, "{id} in {owners:?} of {n}");
                sizes[owners[0] as usize] += 1;
            }
            let fair = ids.len() / n as usize;
            for size in sizes {
                assert!(
                    size.abs_diff(fair) <= fair / 5 + 5,
                    "{size} vs {fair} of {n}"
                );
            }
        }
    }

    #[test]
    fn a_session_s_part_depends_on_its_id_alone() {
        // Fixed for ever: tasks on other machines, builds and days agree.
        assert_eq!(part_of("XNAT_E00001", 10), part_of("XNAT_E00001", 10));
        let parts: Vec<u64> = ["XNAT_E00001", "XNAT_E00002", "XNAT_E00003"]
            .iter()
            .map(|id| part_of(id, 1000))
            .collect();
        // MD5 of the ID, its first 8 bytes big-endian, mod 1000 (python3 hashlib agrees).
        assert_eq!(parts, [914, 615, 136]);
    }

    #[test]
    fn usage_errors_say_how_to_count() {
        assert_eq!(Shard::parse("0/1").unwrap(), Shard { index: 0, count: 1 });
        assert_eq!(
            Shard::parse(" 3 / 10").unwrap(),
            Shard {
                index: 3,
                count: 10
            }
        );
        for bad in ["", "1", "a/b", "1/0", "-1/3", "1/3/4", "/3"] {
            let e = Shard::parse(bad).unwrap_err();
            assert!(e.contains("I/N") || e.contains("at least 1"), "{bad}: {e}");
        }
        let e = Shard::parse("10/10").unwrap_err();
        assert!(e.contains("I counts from 0 to 9"), "{e}");
        assert!(e.contains("$((SLURM_ARRAY_TASK_ID-1))"), "{e}");
    }

    #[test]
    fn a_slurm_array_not_numbered_from_0_is_refused_in_every_task() {
        let array = |id, min, max, count| SlurmArray {
            id: Some(id),
            count: Some(count),
            min: Some(min),
            max: Some(max),
        };
        let shard = |i, n| Shard { index: i, count: n };
        // --array=0-9: fine.
        assert!(shard(3, 10).check_slurm(&array(3, 0, 9, 10)).is_ok());
        // --array=1-10: task 1 would run part 1, task 10 fail, part 0 nobody's.
        let e = shard(1, 10).check_slurm(&array(1, 1, 10, 10)).unwrap_err();
        assert!(e.contains("run 1..10") && e.contains("--array=0-9"), "{e}");
        // ... unless the ID was shifted by the user.
        assert!(shard(0, 10).check_slurm(&array(1, 1, 10, 10)).is_ok());
        // --array=0-18:2 (10 tasks, IDs 0, 2, ..., 18): odd parts nobody's.
        assert!(shard(2, 10).check_slurm(&array(2, 0, 18, 10)).is_err());
        // Not a Slurm array, or I/N not taken from it.
        assert!(shard(1, 10).check_slurm(&SlurmArray::default()).is_ok());
        assert!(shard(1, 4).check_slurm(&array(1, 1, 10, 10)).is_ok());
    }
}
