//! The memory plan: what a run needs in memory, computed at start from its settings, and a refusal to start when
//! that does not fit in `memory_budget_mb`.
//!
//! The plan counts the frame pool (every place a frame can sit: queues and stages), the glance buffers, the
//! patch pool, model weights, model activations for the largest batch, and the process baseline measured at
//! start (code, allocator, thread stacks). Peak RSS is read from `/proc/self/status` so runs can report it.
//!
//! Without a configured budget the plan is still checked, against [`DEFAULT_BUDGET_FRACTION_OF_AVAILABLE`] of
//! the memory the machine has available at start (`MemAvailable`), so a run that cannot fit is refused with
//! an error rather than killed by the allocator or the OOM killer part-way.

use std::fmt;

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BudgetItem {
    pub name: &'static str,
    pub bytes: u64,
    /// What to lower to shrink this item.
    pub lower: &'static str,
}

/// Everything a run will hold, item by item.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryPlan {
    pub items: Vec<BudgetItem>,
}

/// The settings that size a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanInput {
    pub frame_width_px: u32,
    pub frame_height_px: u32,
    /// Number of pipelines (sources) in the process.
    pub sources: usize,
    pub queue_depth: usize,
    pub glance_width_px: usize,
    pub glance_height_px: usize,
    pub max_patches: usize,
    pub patch_side_px: usize,
    /// Bytes of model weights as loaded.
    pub weight_bytes: u64,
    /// Bytes of activations of the classifier for a batch of `max_patches` plus the glance net.
    pub activation_bytes: u64,
    /// Resident memory of the process before any frame (measured).
    pub baseline_bytes: u64,
}

/// A frame can be in each of the three queues (depth each) and in each of four stages (capture, glance,
/// focus, sink) at once.
pub fn frames_in_flight(queue_depth: usize) -> usize {
    3 * queue_depth.max(1) + 4
}

impl MemoryPlan {
    pub fn new(p: &PlanInput) -> Self {
        let frame_bytes = p.frame_width_px as u64 * p.frame_height_px as u64 * 3;
        let sources = p.sources.max(1) as u64;
        let glance_px = (p.glance_width_px * p.glance_height_px) as u64;
        // u8 RGB + f32 CHW + the input tensor copy.
        let glance_bytes = glance_px * 3 + glance_px * 3 * 4 * 2;
        // f32 CHW per patch, buffer + tensor copy + probabilities.
        let patch_bytes = (p.max_patches * 3 * p.patch_side_px * p.patch_side_px * 4 * 2) as u64;
        Self {
            items: vec![
                BudgetItem {
                    name: "frame pool",
                    bytes: sources * frames_in_flight(p.queue_depth) as u64 * frame_bytes,
                    lower: "queue_depth, the capture resolution, or the number of sources",
                },
                BudgetItem {
                    name: "glance buffers",
                    bytes: sources * glance_bytes,
                    lower: "the glance resolution",
                },
                BudgetItem {
                    name: "patch pool",
                    bytes: sources * patch_bytes,
                    lower: "max_patches",
                },
                BudgetItem {
                    name: "model weights",
                    bytes: p.weight_bytes,
                    lower: "the weight dtype (q8_0 or q4_0 instead of f32)",
                },
                BudgetItem {
                    name: "activations",
                    bytes: sources * p.activation_bytes,
                    lower: "max_patches (the largest batch)",
                },
                BudgetItem {
                    name: "process baseline",
                    bytes: p.baseline_bytes,
                    lower: "nothing: code, allocator and thread stacks",
                },
            ],
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.items.iter().map(|i| i.bytes).sum()
    }

    /// `Ok` when the plan fits `budget_mb`; otherwise an error naming the largest items and what to lower.
    pub fn check(&self, budget_mb: f64) -> Result<(), BudgetError> {
        self.check_budget(&MemoryBudget::Configured { budget_mb })
    }

    /// [`check`](Self::check) against a configured or default budget; the error says which it was.
    pub fn check_budget(&self, budget: &MemoryBudget) -> Result<(), BudgetError> {
        let total = self.total_bytes();
        if total <= budget.budget_bytes() {
            return Ok(());
        }
        let mut largest: Vec<&BudgetItem> = self.items.iter().collect();
        largest.sort_by_key(|i| std::cmp::Reverse(i.bytes));
        let advice = largest
            .iter()
            .take(3)
            .map(|i| format!("{} {:.1} MiB (lower {})", i.name, mib(i.bytes), i.lower))
            .collect::<Vec<_>>()
            .join("; ");
        Err(match *budget {
            MemoryBudget::Configured { budget_mb } => BudgetError::DoesNotFit {
                needed_mb: mib(total),
                budget_mb,
                advice,
            },
            MemoryBudget::Default {
                budget_mb,
                available_mb,
            } => BudgetError::DoesNotFitDefault {
                needed_mb: mib(total),
                budget_mb,
                available_mb,
                advice,
            },
        })
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "memory plan:")?;
        for i in &self.items {
            writeln!(f, "  {:<17} {:>9.2} MiB", i.name, mib(i.bytes))?;
        }
        write!(f, "  {:<17} {:>9.2} MiB", "total", mib(self.total_bytes()))
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    #[error("memory budget exceeded: the run needs {needed_mb:.1} MiB but memory_budget_mb is {budget_mb}; largest items: {advice}; or raise memory_budget_mb to at least {}", needed_mb.ceil())]
    DoesNotFit {
        needed_mb: f64,
        budget_mb: f64,
        advice: String,
    },
    #[error("memory budget exceeded: the run needs {needed_mb:.1} MiB but the default budget is {budget_mb:.1} MiB ({percent} % of the {available_mb:.1} MiB this machine has available); largest items: {advice}; or set memory_budget_mb explicitly", percent = DEFAULT_BUDGET_FRACTION_OF_AVAILABLE * 100.0)]
    DoesNotFitDefault {
        needed_mb: f64,
        budget_mb: f64,
        available_mb: f64,
        advice: String,
    },
}

/// Share of the machine's available memory (`MemAvailable` in `/proc/meminfo`) a run may plan for when no
/// `memory_budget_mb` is given: the rest stays for the page cache and other processes.
pub const DEFAULT_BUDGET_FRACTION_OF_AVAILABLE: f64 = 0.75;

/// The budget a run's plan is checked against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryBudget {
    /// `memory_budget_mb` as configured.
    Configured { budget_mb: f64 },
    /// None configured: [`DEFAULT_BUDGET_FRACTION_OF_AVAILABLE`] of what the machine had available at start.
    Default { budget_mb: f64, available_mb: f64 },
}

impl MemoryBudget {
    /// The configured budget, else the default from this machine's available memory; `None` only where
    /// `/proc/meminfo` cannot be read.
    pub fn resolve(configured_mb: Option<f64>) -> Option<Self> {
        match configured_mb {
            Some(budget_mb) => Some(Self::Configured { budget_mb }),
            None => mem_available_bytes().map(Self::default_from_available),
        }
    }

    pub fn default_from_available(available_bytes: u64) -> Self {
        let available_mb = mib(available_bytes);
        Self::Default {
            budget_mb: available_mb * DEFAULT_BUDGET_FRACTION_OF_AVAILABLE,
            available_mb,
        }
    }

    pub fn budget_mb(&self) -> f64 {
        match *self {
            Self::Configured { budget_mb } | Self::Default { budget_mb, .. } => budget_mb,
        }
    }

    pub fn budget_bytes(&self) -> u64 {
        (self.budget_mb() * 1024.0 * 1024.0) as u64
    }
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Configured { budget_mb } => write!(f, "memory_budget_mb = {budget_mb}"),
            Self::Default {
                budget_mb,
                available_mb,
            } => write!(
                f,
                "the default memory budget of {budget_mb:.1} MiB ({} % of {available_mb:.1} MiB available)",
                DEFAULT_BUDGET_FRACTION_OF_AVAILABLE * 100.0
            ),
        }
    }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes; `None` where it cannot be read.
pub fn mem_available_bytes() -> Option<u64> {
    mem_available_from_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemAvailable` (kB in the file) of a `/proc/meminfo` text, in bytes.
pub fn mem_available_from_meminfo(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Resident set size now and at its peak (VmRSS, VmHWM), in bytes; `None` where `/proc` is unavailable.
pub fn rss_bytes() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn input() -> PlanInput {
        PlanInput {
            frame_width_px: 1280,
            frame_height_px: 960,
            sources: 1,
            queue_depth: 2,
            glance_width_px: 320,
            glance_height_px: 240,
            max_patches: 8,
            patch_side_px: 32,
            weight_bytes: 1 << 20,
            activation_bytes: 1 << 20,
            baseline_bytes: 20 << 20,
        }
    }

    #[test]
    fn frame_pool_counts_every_place_a_frame_can_be() {
        let plan = MemoryPlan::new(&input());
        let pool = &plan.items[0];
        assert_eq!(pool.bytes, 10 * 1280 * 960 * 3);
    }

    #[test]
    fn plan_that_does_not_fit_is_refused_naming_the_largest_item() {
        let plan = MemoryPlan::new(&input());
        let err = plan.check(30.0).unwrap_err().to_string();
        assert!(err.contains("frame pool"), "{err}");
        assert!(err.contains("queue_depth"), "{err}");
        assert!(plan.check(200.0).is_ok());
    }

    #[test]
    fn the_default_budget_is_a_fixed_share_of_available_memory_and_names_itself_when_exceeded() {
        let meminfo = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:      40960 kB\n";
        let available = mem_available_from_meminfo(meminfo).unwrap();
        assert_eq!(available, 40960 * 1024);
        let budget = MemoryBudget::default_from_available(available);
        assert_eq!(budget.budget_mb(), 30.0);
        let plan = MemoryPlan::new(&input());
        let err = plan.check_budget(&budget).unwrap_err().to_string();
        assert!(
            err.contains("default budget is 30.0 MiB")
                && err.contains("75 % of the 40.0 MiB")
                && err.contains("frame pool"),
            "{err}"
        );
        assert!(plan
            .check_budget(&MemoryBudget::default_from_available(400 << 20))
            .is_ok());
        assert_eq!(mem_available_from_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn a_configured_budget_wins_over_the_default() {
        assert_eq!(
            MemoryBudget::resolve(Some(64.0)),
            Some(MemoryBudget::Configured { budget_mb: 64.0 })
        );
        // This machine has a /proc/meminfo: without a budget the default applies.
        assert!(matches!(
            MemoryBudget::resolve(None),
            Some(MemoryBudget::Default { .. })
        ));
    }

    #[test]
    fn rss_is_readable_on_linux() {
        let (rss, peak) = rss_bytes().unwrap();
        assert!(rss > 0 && peak >= rss);
    }
}
