//! Typed sample values: what each number of a sample measures (`samples`/`count`, `cpu`/
//! `nanoseconds`, `off_cpu`/`nanoseconds`, or another tool's types read from pprof), and which of
//! them folded stacks and flame graphs show.
//!
//! A profile names its value types once; each sample holds its numbers in that order in a small
//! fixed array, not a `Vec`: a long recording holds tens of thousands of samples. The first type is
//! always the one that counts samples (what `Profile::total_samples` sums and a CPU profile shows).

use std::sync::Arc;

use anyhow::{bail, Result};

use super::Profile;

/// Most value types a profile keeps: samples, CPU time and off-CPU time. Another tool's pprof with
/// more (Go heap profiles have four) keeps its counting value and the next ones in file order.
pub const MAX_VALUES: usize = 3;

/// What one value of a sample measures, as pprof names it (`type`/`unit`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValueType {
    pub name: Arc<str>,
    pub unit: Arc<str>,
}

/// Samples taken (the counting value of a CPU profile, ours and Go's).
pub const SAMPLES: (&str, &str) = ("samples", "count");
/// Time on a CPU: samples weighted by their sampling period.
pub const CPU: (&str, &str) = ("cpu", "nanoseconds");
/// Time switched out, weighted by the length of each interval (issue 20).
pub const OFF_CPU: (&str, &str) = ("off_cpu", "nanoseconds");

impl ValueType {
    pub fn new(name: &str, unit: &str) -> Self {
        ValueType {
            name: Arc::from(name),
            unit: Arc::from(unit),
        }
    }

    pub fn of((name, unit): (&str, &str)) -> Self {
        ValueType::new(name, unit)
    }

    pub fn is(&self, (name, unit): (&str, &str)) -> bool {
        &*self.name == name && &*self.unit == unit
    }
}

/// The value types of a profile, at most [`MAX_VALUES`], the counting one first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueTypes(Vec<ValueType>);

impl Default for ValueTypes {
    /// Samples only: what a capture and folded stacks give.
    fn default() -> Self {
        ValueTypes(vec![ValueType::of(SAMPLES)])
    }
}

impl ValueTypes {
    /// `counting` first, then `others` while there is room; the others that did not fit.
    pub fn new(counting: ValueType, others: impl IntoIterator<Item = ValueType>) -> (Self, usize) {
        let mut types = ValueTypes(vec![counting]);
        let dropped = others
            .into_iter()
            .filter(|other| types.push(other.clone()).is_none())
            .count();
        (types, dropped)
    }

    pub fn as_slice(&self) -> &[ValueType] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn position(&self, kind: (&str, &str)) -> Option<usize> {
        self.0.iter().position(|t| t.is(kind))
    }

    /// The index of `value_type`, added if new and there is room.
    pub fn push(&mut self, value_type: ValueType) -> Option<usize> {
        if let Some(index) = self.0.iter().position(|t| *t == value_type) {
            return Some(index);
        }
        if self.0.len() == MAX_VALUES {
            return None;
        }
        self.0.push(value_type);
        Some(self.0.len() - 1)
    }
}

/// A sample's values, in the order of its profile's [`ValueTypes`]; unused slots are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Values([u64; MAX_VALUES]);

impl Values {
    /// `count` samples and nothing else (the first value type counts samples).
    pub fn count(count: u64) -> Self {
        let mut values = Values::default();
        values.0[0] = count;
        values
    }

    pub fn get(&self, index: usize) -> u64 {
        self.0.get(index).copied().unwrap_or(0)
    }

    pub fn set(&mut self, index: usize, value: u64) {
        self.0[index] = value;
    }

    /// Element-wise, saturating: merged counts of a long recording cannot wrap.
    pub fn add(&mut self, other: &Values) {
        for (total, value) in self.0.iter_mut().zip(other.0) {
            *total = total.saturating_add(value);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&v| v == 0)
    }

    /// The values moved to the indices of `map` (`None`: dropped).
    pub fn remapped(&self, map: &[Option<usize>]) -> Values {
        let mut values = Values::default();
        for (&value, to) in self.0.iter().zip(map) {
            if let Some(to) = *to {
                values.0[to] = values.0[to].saturating_add(value);
            }
        }
        values
    }
}

/// Gives a capture's profile its CPU time: each sample stands for one sampling period of its
/// `frequency_hz` (today's captures count samples; weighted ones may store `cpu` themselves). The
/// CPU value goes right after the counting one, so a wall-clock profile's types read `samples`,
/// `cpu`, `off_cpu` whichever part brought off-CPU time first.
pub fn add_cpu_time(profile: &mut Profile) {
    let frequency_hz = profile.metadata.frequency_hz;
    let Some(period) = frequency_hz
        .filter(|&hz| hz > 0)
        .map(|hz| 1_000_000_000 / hz)
    else {
        return;
    };
    let types = &mut profile.value_types;
    if types.position(CPU).is_some() || !types.0[0].is(SAMPLES) || types.len() == MAX_VALUES {
        return;
    }
    types.0.insert(1, ValueType::of(CPU));
    // Every value after the counting one moves up by one.
    let map: Vec<Option<usize>> = (0..MAX_VALUES)
        .map(|i| Some(if i == 0 { 0 } else { i + 1 }).filter(|&to| to < MAX_VALUES))
        .collect();
    for sample in &mut profile.samples {
        let mut values = sample.values.remapped(&map);
        values.0[1] = sample.values.0[0].saturating_mul(period);
        sample.values = values;
    }
}

/// A capture made with `--off-cpu` has off-CPU time even when no thread was switched out for
/// long enough: its counts are microseconds all the same, as `--help` promises.
pub fn add_off_cpu_type(profile: &mut Profile) {
    profile.value_types.push(ValueType::of(OFF_CPU));
}

/// Which value folded stacks, flame graphs and `diff` show (`report --value`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ValueChoice {
    /// Wall-clock time where the profile has off-CPU time, else samples.
    #[default]
    Auto,
    /// The counting value: samples of a CPU profile (another tool's: its default sample type).
    Samples,
    /// Microseconds on a CPU.
    Cpu,
    /// Microseconds switched out.
    OffCpu,
    /// Microseconds on a CPU plus switched out: each thread as wide as its wall-clock time.
    Wall,
}

/// A [`ValueChoice`] resolved against one profile's value types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown {
    /// The values summed (at most two: cpu and off_cpu).
    indices: [Option<usize>; 2],
    /// Nanoseconds shown as microseconds: 1000; counts as they are: 1.
    divisor: u64,
    /// What the SVG calls one unit.
    pub unit: &'static str,
}

impl Shown {
    pub fn resolve(types: &ValueTypes, choice: ValueChoice) -> Result<Shown> {
        let cpu = types.position(CPU);
        let off_cpu = types.position(OFF_CPU);
        let values = || {
            let names: Vec<String> = types
                .as_slice()
                .iter()
                .map(|t| format!("{}/{}", t.name, t.unit))
                .collect();
            names.join(", ")
        };
        let time = |indices: [Option<usize>; 2]| Shown {
            indices,
            divisor: 1000,
            unit: "µs",
        };
        let missing = |asked: &str, name: &str| -> Result<Shown> {
            bail!(
                "--value {asked}: the profile has no {name} time (its values: {})",
                values()
            )
        };
        match choice {
            ValueChoice::Samples => Ok(Shown {
                indices: [Some(0), None],
                divisor: 1,
                unit: "samples",
            }),
            ValueChoice::Cpu => {
                cpu.map_or_else(|| missing("cpu", "cpu"), |_| Ok(time([cpu, None])))
            }
            ValueChoice::OffCpu => off_cpu.map_or_else(
                || missing("off-cpu", "off-cpu"),
                |_| Ok(time([off_cpu, None])),
            ),
            ValueChoice::Wall if off_cpu.is_none() => missing("wall", "off-cpu"),
            ValueChoice::Wall if cpu.is_none() => missing("wall", "cpu"),
            ValueChoice::Wall => Ok(time([cpu, off_cpu])),
            ValueChoice::Auto if off_cpu.is_some() => Ok(time([cpu, off_cpu])),
            ValueChoice::Auto => Shown::resolve(types, ValueChoice::Samples),
        }
    }

    /// The raw value of `values` shown (nanoseconds or count), summed before [`Shown::scale`] so
    /// that short intervals are not each rounded away.
    pub fn raw(&self, values: &Values) -> u64 {
        self.indices
            .iter()
            .flatten()
            .fold(0u64, |sum, &i| sum.saturating_add(values.get(i)))
    }

    /// A summed raw value in the unit shown, rounded to the nearest.
    pub fn scale(&self, raw: u64) -> u64 {
        match self.divisor {
            1 => raw,
            divisor => raw / divisor + u64::from(raw % divisor >= divisor / 2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(kinds: &[(&str, &str)]) -> ValueTypes {
        let mut all = kinds.iter().map(|&k| ValueType::of(k));
        ValueTypes::new(all.next().expect("one"), all).0
    }

    /// Values merge element-wise without wrapping; remapping follows the map and drops `None`.
    #[test]
    fn values_add_and_remap() {
        let mut a = Values([1, 2, u64::MAX]);
        a.add(&Values([1, 1, 1]));
        assert_eq!(a, Values([2, 3, u64::MAX]));
        let moved = Values([5, 6, 7]).remapped(&[Some(0), None, Some(1)]);
        assert_eq!(moved, Values([5, 7, 0]));
        assert!(Values::default().is_zero() && !Values::count(1).is_zero());
    }

    /// Past [`MAX_VALUES`] types, the others are counted as dropped; the counting one stays first.
    #[test]
    fn types_keep_the_counting_one_first() {
        let (kept, dropped) = ValueTypes::new(
            ValueType::new("inuse_space", "bytes"),
            ["alloc_objects", "alloc_space", "inuse_objects"].map(|n| ValueType::new(n, "count")),
        );
        assert_eq!(kept.len(), MAX_VALUES);
        assert_eq!(&*kept.as_slice()[0].name, "inuse_space");
        assert_eq!(dropped, 1);
    }

    /// Auto shows samples of a CPU profile and wall-clock microseconds of one with off-CPU time;
    /// nanoseconds are summed, then rounded to microseconds; a missing value is an error naming it.
    #[test]
    fn choices_resolve_against_the_types() {
        let cpu_only = types(&[SAMPLES, CPU]);
        let shown = Shown::resolve(&cpu_only, ValueChoice::Auto).unwrap();
        assert_eq!(
            (shown.unit, shown.raw(&Values([3, 30_000, 0]))),
            ("samples", 3)
        );
        let error = Shown::resolve(&cpu_only, ValueChoice::OffCpu).unwrap_err();
        assert!(error.to_string().contains("no off-cpu time"), "{error}");
        let error = Shown::resolve(&cpu_only, ValueChoice::Wall).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("--value wall: the profile has no off-cpu"));

        let wall = types(&[SAMPLES, CPU, OFF_CPU]);
        let shown = Shown::resolve(&wall, ValueChoice::Auto).unwrap();
        assert_eq!(shown.unit, "µs");
        assert_eq!(shown.raw(&Values([2, 2_000_400, 1_000_200])), 3_000_600);
        assert_eq!(shown.scale(3_000_600), 3001);
        assert_eq!(shown.scale(3_000_499), 3000);
        let off = Shown::resolve(&wall, ValueChoice::OffCpu).unwrap();
        assert_eq!(off.raw(&Values([2, 2_000_400, 1_000_200])), 1_000_200);
        let samples = Shown::resolve(&types(&[SAMPLES]), ValueChoice::Cpu);
        assert!(samples.is_err());
    }
}
