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
}
