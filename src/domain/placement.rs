//! Placement: with `host: auto`, a session goes to the reachable host with the lowest share
//! of its capacity in use (live sessions / capacity), ties to the first by name; a full host
//! takes none.

/// One host's load as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// Host name.
    pub host: String,
    /// Live sessions on it.
    pub live: usize,
    /// Its `capacity`.
    pub capacity: usize,
    /// Whether it can be reached (or has not been tried yet).
    pub reachable: bool,
}

/// The least-loaded host with room, if any.
pub fn least_loaded(loads: &[Load]) -> Option<&str> {
    loads
        .iter()
        .filter(|l| l.reachable && l.live < l.capacity)
        // live/capacity compared as fractions without floating point: a/b < c/d ⇔ ad < cb.
        .min_by(|a, b| (a.live * b.capacity).cmp(&(b.live * a.capacity)))
        .map(|l| l.host.as_str())
}

/// Hosts for `n` new sessions placed together (a batch): one at a time, each counting those
/// placed before it, so the batch spreads by load instead of landing where the load was
/// lowest before any of it existed. `None` for a session no host has room for.
pub fn place_many(loads: &[Load], n: usize) -> Vec<Option<String>> {
    let mut loads = loads.to_vec();
    (0..n)
        .map(|_| {
            let pick = least_loaded(&loads).map(str::to_string);
            if let Some(l) = pick
                .as_ref()
                .and_then(|h| loads.iter_mut().find(|l| &l.host == h))
            {
                l.live += 1;
            }
            pick
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(host: &str, live: usize, capacity: usize, reachable: bool) -> Load {
        Load {
            host: host.into(),
            live,
            capacity,
            reachable,
        }
    }

    #[test]
    fn the_lowest_share_of_capacity_wins_and_full_or_lost_hosts_take_none() {
        let l = [load("a", 2, 4, true), load("b", 2, 8, true)];
        assert_eq!(least_loaded(&l), Some("b"));
        let l = [load("a", 0, 1, true), load("b", 0, 8, true)];
        assert_eq!(least_loaded(&l), Some("a"), "ties go to the first");
        let l = [load("a", 1, 1, true), load("b", 0, 8, false)];
        assert_eq!(least_loaded(&l), None);
        assert_eq!(least_loaded(&[]), None);
    }

    #[test]
    fn a_batch_spreads_by_load_and_stops_at_capacity() {
        let some = |h: &str| Some(h.to_string());
        let l = [load("a", 0, 2, true), load("b", 0, 2, true)];
        assert_eq!(
            place_many(&l, 5),
            vec![some("a"), some("b"), some("a"), some("b"), None]
        );
        // Existing load counts; an unreachable host takes none.
        let l = [
            load("a", 3, 4, true),
            load("b", 0, 4, true),
            load("c", 0, 9, false),
        ];
        assert_eq!(
            place_many(&l, 4),
            vec![some("b"), some("b"), some("b"), some("a")]
        );
        // Shares, not counts: a host twice as large takes twice as many.
        let l = [load("a", 0, 2, true), load("b", 0, 4, true)];
        let picks = place_many(&l, 6);
        assert_eq!(
            picks.iter().filter(|p| p.as_deref() == Some("b")).count(),
            4
        );
        assert!(place_many(&l, 0).is_empty());
    }
}
