//! Which share of the plan this process owns: flags, else the scheduler's environment
//! (SLURM job arrays, Kubernetes indexed Jobs). The scheduler is the distributed engine;
//! regionfeat only reads where it stands.

/// This worker's place: index `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WorkerShare {
    /// 0-based worker index.
    pub index: usize,
    /// Number of workers.
    pub count: usize,
    /// Where the values came from (`flags`, `slurm`, `kubernetes`, `default`).
    pub source: &'static str,
}

fn num(env: &dyn Fn(&str) -> Option<String>, key: &str) -> Result<Option<usize>, String> {
    match env(key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{key}={v:?} is not a non-negative integer")),
    }
}

/// Resolves the share from flags, then `SLURM_ARRAY_TASK_ID`/`SLURM_ARRAY_TASK_COUNT`
/// (minus `SLURM_ARRAY_TASK_MIN`), then `JOB_COMPLETION_INDEX` with the count from
/// `--num-workers` or `REGIONFEAT_NUM_WORKERS`; else a single worker.
pub fn resolve(
    index_flag: Option<usize>,
    count_flag: Option<usize>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<WorkerShare, String> {
    let check = |s: WorkerShare| {
        if s.count == 0 || s.index >= s.count {
            Err(format!(
                "worker index {} is not below the worker count {} (from {})",
                s.index, s.count, s.source
            ))
        } else {
            Ok(s)
        }
    };
    if let Some(index) = index_flag {
        let count = count_flag.ok_or("--worker-index needs --num-workers")?;
        return check(WorkerShare {
            index,
            count,
            source: "flags",
        });
    }
    if let Some(id) = num(env, "SLURM_ARRAY_TASK_ID")? {
        let min = num(env, "SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let count = match count_flag {
            Some(c) => c,
            None => num(env, "SLURM_ARRAY_TASK_COUNT")?.ok_or(
                "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: pass --num-workers",
            )?,
        };
        let index = id.checked_sub(min).ok_or_else(|| {
            format!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}")
        })?;
        return check(WorkerShare {
            index,
            count,
            source: "slurm",
        });
    }
    if let Some(index) = num(env, "JOB_COMPLETION_INDEX")? {
        let count = match count_flag {
            Some(c) => c,
            None => num(env, "REGIONFEAT_NUM_WORKERS")?.ok_or(
                "JOB_COMPLETION_INDEX is set: pass --num-workers or set REGIONFEAT_NUM_WORKERS to the Job's completions",
            )?,
        };
        return check(WorkerShare {
            index,
            count,
            source: "kubernetes",
        });
    }
    check(WorkerShare {
        index: 0,
        count: count_flag.unwrap_or(1),
        source: "default",
    })
}

/// [`resolve`] with the process environment.
pub fn resolve_from_env(
    index_flag: Option<usize>,
    count_flag: Option<usize>,
) -> Result<WorkerShare, String> {
    resolve(index_flag, count_flag, &|k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn flags_then_slurm_then_kubernetes() {
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            resolve(Some(2), Some(3), &e).unwrap(),
            WorkerShare {
                index: 2,
                count: 3,
                source: "flags"
            }
        );
        assert_eq!(
            resolve(None, None, &e).unwrap(),
            WorkerShare {
                index: 1,
                count: 4,
                source: "slurm"
            }
        );
        let k = env(&[
            ("JOB_COMPLETION_INDEX", "3"),
            ("REGIONFEAT_NUM_WORKERS", "4"),
        ]);
        assert_eq!(
            resolve(None, None, &k).unwrap(),
            WorkerShare {
                index: 3,
                count: 4,
                source: "kubernetes"
            }
        );
        assert!(resolve(None, None, &env(&[("JOB_COMPLETION_INDEX", "3")]))
            .unwrap_err()
            .contains("--num-workers"));
        assert!(resolve(None, Some(2), &env(&[("JOB_COMPLETION_INDEX", "3")])).is_err());
        assert!(resolve(Some(0), None, &env(&[])).is_err());
        assert_eq!(resolve(None, None, &env(&[])).unwrap().count, 1);
        assert!(resolve(None, None, &env(&[("SLURM_ARRAY_TASK_ID", "x")])).is_err());
    }
}
