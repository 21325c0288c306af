//! Where a task runs: among the workers that qualify, prefer the least loaded using the
//! "power of two choices": sample two at random and take the less loaded. It spreads load
//! almost as well as scanning for the global minimum while never herding every gateway onto
//! the same momentarily idle worker.

use rand::Rng;

/// A worker that qualifies for a task, with the gateway's view of its load.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<P> {
    pub id: P,
    pub load: u32,
    pub capacity: u32,
}

impl<P> Candidate<P> {
    pub fn has_room(&self) -> bool {
        self.load < self.capacity
    }

    /// Load as a fraction of capacity, so a big worker is not starved by a small one.
    fn utilisation(&self) -> f64 {
        f64::from(self.load) / f64::from(self.capacity.max(1))
    }
}

/// Picks a worker with room for one more task. Workers in `avoid` (those that already
/// failed this task) are used only when no other worker has room.
pub fn choose<P: PartialEq + Clone>(candidates: &[Candidate<P>], avoid: &[P], rng: &mut impl Rng) -> Option<P> {
    let fresh: Vec<&Candidate<P>> = candidates.iter().filter(|c| c.has_room() && !avoid.contains(&c.id)).collect();
    let pool = if fresh.is_empty() { candidates.iter().filter(|c| c.has_room()).collect() } else { fresh };
    match pool.len() {
        0 => None,
        1 => Some(pool[0].id.clone()),
        n => {
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (x, y) = (pool[a], pool[b]);
            Some(if y.utilisation() < x.utilisation() { y.id.clone() } else { x.id.clone() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn c(id: u32, load: u32, capacity: u32) -> Candidate<u32> {
        Candidate { id, load, capacity }
    }

    #[test]
    fn nobody_with_room_means_no_choice() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(choose(&[c(1, 2, 2), c(2, 5, 5)], &[], &mut rng), None);
        assert_eq!(choose::<u32>(&[], &[], &mut rng), None);
    }

    #[test]
    fn full_workers_are_never_chosen() {
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..200 {
            assert_eq!(choose(&[c(1, 4, 4), c(2, 0, 4), c(3, 4, 4)], &[], &mut rng), Some(2));
        }
    }

    #[test]
    fn failed_workers_are_avoided_while_others_have_room() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            assert_eq!(choose(&[c(1, 0, 4), c(2, 3, 4)], &[1], &mut rng), Some(2));
        }
        // ... but used when they are the only option left.
        assert_eq!(choose(&[c(1, 0, 4), c(2, 4, 4)], &[1], &mut rng), Some(1));
    }

    #[test]
    fn two_choices_prefer_the_less_loaded() {
        let mut rng = StdRng::seed_from_u64(4);
        let cands = [c(1, 0, 10), c(2, 9, 10)];
        for _ in 0..200 {
            assert_eq!(choose(&cands, &[], &mut rng), Some(1));
        }
    }

    #[test]
    fn load_spreads_across_equal_workers() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut cands: Vec<Candidate<u32>> = (0..4).map(|i| c(i, 0, 1000)).collect();
        for _ in 0..400 {
            let id = choose(&cands, &[], &mut rng).unwrap();
            cands[id as usize].load += 1;
        }
        let max = cands.iter().map(|c| c.load).max().unwrap();
        let min = cands.iter().map(|c| c.load).min().unwrap();
        assert!(max - min <= 10, "loads {:?}", cands.iter().map(|c| c.load).collect::<Vec<_>>());
    }
}
