//! Regions and order routing (API.md "Regions, routing and transfers"): which store, or
//! which few stores, take a region order. Pure: the caller gathers each store's distance and
//! stock, this decides.
//!
//! The rule: the nearest store (great-circle distance) that has every line in full; with
//! `allow_split`, if no single store can, the fewest stores whose stock together covers
//! every line, then the least total distance, then the smallest store ids. Within the
//! chosen stores the nearest ships as much of each line as it has, the next the rest.

use super::ids::{ProductId, StoreId};
use super::model::Location;
use super::number::Qty;

/// Most stores in one region: routing looks at each of them for every order.
pub const REGION_STORES_MAX: usize = 1_000;
/// A split considers only this many stores, the nearest that have any of the items: every
/// subset of them may be tried (2¹² = 4,096 subsets × 500 lines stays a few milliseconds).
pub const SPLIT_CANDIDATES_MAX: usize = 12;
/// The mean radius of the Earth in metres (the great-circle distance's sphere).
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// The great-circle distance between two locations, in whole metres (haversine). The one
/// place with floating point: no quantity or amount depends on it, only an order of stores.
pub fn distance_m(a: &Location, b: &Location) -> u64 {
    let rad = |micro: i64| (micro as f64 / 1e6).to_radians();
    let (lat1, lat2) = (rad(a.lat_micro), rad(b.lat_micro));
    let dlat = lat2 - lat1;
    let dlon = rad(b.lon_micro) - rad(a.lon_micro);
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    let d = 2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin();
    d.round() as u64
}

/// A store that may take part: how far it is and what it has of each line (in line order;
/// zero for a product it does not sell).
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub store_id: StoreId,
    pub distance_m: u64,
    pub available: Vec<Qty>,
}

/// One store's part of a routed order: its lines (product, quantity), in request order.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub store_id: StoreId,
    pub distance_m: u64,
    pub lines: Vec<(ProductId, Qty)>,
}

/// A line the region cannot serve as asked: what the region's stores have of it together.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegionShort {
    pub product_id: ProductId,
    pub requested: Qty,
    pub available: Qty,
}

/// Routes `lines` to `candidates` by the rule above; `Err` lists the short lines.
pub fn route(
    lines: &[(ProductId, Qty)],
    candidates: &[Candidate],
    allow_split: bool,
) -> Result<Vec<Part>, Vec<RegionShort>> {
    let mut by_distance: Vec<&Candidate> = candidates.iter().collect();
    by_distance.sort_by(|a, b| (a.distance_m, &a.store_id).cmp(&(b.distance_m, &b.store_id)));
    let covers = |c: &Candidate| lines.iter().zip(&c.available).all(|((_, q), a)| a >= q);
    if let Some(store) = by_distance.iter().find(|c| covers(c)) {
        return Ok(vec![Part {
            store_id: store.store_id.clone(),
            distance_m: store.distance_m,
            lines: lines.to_vec(),
        }]);
    }
    if allow_split && let Some(set) = fewest_stores(lines, &by_distance) {
        return Ok(allocate(lines, &set));
    }
    Err(shortages(lines, candidates, allow_split))
}

/// The best set of two or more stores (nearest first) that covers every line together.
fn fewest_stores<'a>(
    lines: &[(ProductId, Qty)],
    by_distance: &[&'a Candidate],
) -> Option<Vec<&'a Candidate>> {
    let useful: Vec<&Candidate> = by_distance
        .iter()
        .filter(|c| c.available.iter().any(|a| *a > Qty::ZERO))
        .take(SPLIT_CANDIDATES_MAX)
        .copied()
        .collect();
    let n = useful.len();
    for size in 2..=n {
        // Ties on distance: the set whose stores come first in distance order.
        let mut best: Option<(u64, Vec<usize>)> = None;
        for mask in 1u32..(1 << n) {
            if mask.count_ones() as usize != size {
                continue;
            }
            let set: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
            let covered = lines.iter().enumerate().all(|(l, (_, q))| {
                let together: u64 = set.iter().map(|&i| useful[i].available[l].0).sum();
                together >= q.0
            });
            if !covered {
                continue;
            }
            let key = (set.iter().map(|&i| useful[i].distance_m).sum(), set);
            if best.as_ref().is_none_or(|b| key < *b) {
                best = Some(key);
            }
        }
        if let Some((_, set)) = best {
            return Some(set.into_iter().map(|i| useful[i]).collect());
        }
    }
    None
}

/// Splits the lines over `set` (nearest first): each store ships what it has of what is
/// still missing. Stores left with nothing to ship are dropped.
fn allocate(lines: &[(ProductId, Qty)], set: &[&Candidate]) -> Vec<Part> {
    let mut missing: Vec<u64> = lines.iter().map(|(_, q)| q.0).collect();
    let mut parts = Vec::new();
    for c in set {
        let mut part = Vec::new();
        for (l, (id, _)) in lines.iter().enumerate() {
            let take = missing[l].min(c.available[l].0);
            if take > 0 {
                missing[l] -= take;
                part.push((id.clone(), Qty(take)));
            }
        }
        if !part.is_empty() {
            parts.push(Part {
                store_id: c.store_id.clone(),
                distance_m: c.distance_m,
                lines: part,
            });
        }
    }
    debug_assert!(missing.iter().all(|m| *m == 0), "the set covers every line");
    parts
}

/// The lines that stop an assignment, each with the region's total. With a split, the lines
/// the region lacks in total; without, the lines no single store has in full (every line
/// when each is somewhere in full but never all in one store).
fn shortages(
    lines: &[(ProductId, Qty)],
    candidates: &[Candidate],
    allow_split: bool,
) -> Vec<RegionShort> {
    let total = |l: usize| Qty(candidates.iter().map(|c| c.available[l].0).sum());
    let best = |l: usize| {
        candidates
            .iter()
            .map(|c| c.available[l])
            .max()
            .unwrap_or(Qty::ZERO)
    };
    let short = |l: usize, q: Qty| {
        if allow_split {
            total(l) < q
        } else {
            best(l) < q
        }
    };
    let mut out: Vec<RegionShort> = lines
        .iter()
        .enumerate()
        .filter(|(l, (_, q))| short(*l, *q))
        .map(|(l, (id, q))| RegionShort {
            product_id: id.clone(),
            requested: *q,
            available: total(l),
        })
        .collect();
    if out.is_empty() {
        out = lines
            .iter()
            .enumerate()
            .map(|(l, (id, q))| RegionShort {
                product_id: id.clone(),
                requested: *q,
                available: total(l),
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(lat: f64, lon: f64) -> Location {
        Location {
            lat_micro: (lat * 1e6) as i64,
            lon_micro: (lon * 1e6) as i64,
        }
    }

    fn q(units: u64) -> Qty {
        Qty(units * 1000)
    }

    fn cand(id: &str, distance_m: u64, available: &[u64]) -> Candidate {
        Candidate {
            store_id: StoreId::parse(id).unwrap(),
            distance_m,
            available: available.iter().map(|a| q(*a)).collect(),
        }
    }

    fn lines(qs: &[u64]) -> Vec<(ProductId, Qty)> {
        qs.iter()
            .enumerate()
            .map(|(i, n)| (ProductId::parse(&format!("P{i}")).unwrap(), q(*n)))
            .collect()
    }

    fn stores(parts: &[Part]) -> Vec<&str> {
        parts.iter().map(|p| p.store_id.as_str()).collect()
    }

    #[test]
    fn distances_are_great_circle_metres() {
        // Mumbai (CST) to Pune station: about 120 km as the crow flies.
        let d = distance_m(&loc(18.9398, 72.8355), &loc(18.5286, 73.8744));
        assert!((118_000..122_000).contains(&d), "{d}");
        assert_eq!(distance_m(&loc(19.0, 72.8), &loc(19.0, 72.8)), 0);
        // One degree of latitude is about 111.2 km everywhere.
        let d = distance_m(&loc(0.0, 10.0), &loc(1.0, 10.0));
        assert!((111_100..111_300).contains(&d), "{d}");
    }

    #[test]
    fn the_nearest_complete_store_wins() {
        let c = [cand("FAR", 9_000, &[5, 5]), cand("NEAR", 1_000, &[5, 5])];
        assert_eq!(
            stores(&route(&lines(&[2, 3]), &c, false).unwrap()),
            ["NEAR"]
        );
        // A nearer store short of one item loses to a farther complete one.
        let c = [cand("FAR", 9_000, &[5, 5]), cand("NEAR", 1_000, &[5, 2])];
        assert_eq!(stores(&route(&lines(&[2, 3]), &c, true).unwrap()), ["FAR"]);
        // Equal distance: the smaller id.
        let c = [cand("B", 1_000, &[5]), cand("A", 1_000, &[5])];
        assert_eq!(stores(&route(&lines(&[1]), &c, false).unwrap()), ["A"]);
    }

    #[test]
    fn a_split_uses_the_fewest_stores_then_the_least_distance() {
        let c = [
            cand("A", 1_000, &[3, 0, 0]),
            cand("B", 2_000, &[0, 3, 0]),
            cand("C", 3_000, &[0, 0, 3]),
            cand("BIG", 8_000, &[0, 3, 3]),
        ];
        // A + BIG (two stores, 9 km) beats A + B + C (three stores, 6 km).
        let parts = route(&lines(&[3, 3, 3]), &c, true).unwrap();
        assert_eq!(stores(&parts), ["A", "BIG"]);
        assert_eq!(parts[1].lines.len(), 2);
        // Without allow_split: refused, naming the lines no single store has.
        let short = route(&lines(&[3, 3, 3]), &c, false).unwrap_err();
        assert_eq!(
            short.len(),
            3,
            "each line is somewhere, never all in one store"
        );
        assert_eq!(short[0].available, q(3));
        // Of two pairs, the nearer pair; a line split across both, nearest first.
        let c = [
            cand("A", 1_000, &[2]),
            cand("B", 2_000, &[2]),
            cand("C", 3_000, &[4]),
        ];
        let parts = route(&lines(&[5]), &c, true).unwrap();
        assert_eq!(stores(&parts), ["A", "C"]);
        assert_eq!(parts[0].lines[0].1, q(2));
        assert_eq!(parts[1].lines[0].1, q(3));
    }

    #[test]
    fn nothing_possible_lists_the_regions_totals() {
        let c = [cand("A", 1_000, &[2, 9]), cand("B", 2_000, &[2, 9])];
        let short = route(&lines(&[5, 1]), &c, true).unwrap_err();
        assert_eq!(
            short,
            vec![RegionShort {
                product_id: ProductId::parse("P0").unwrap(),
                requested: q(5),
                available: q(4),
            }]
        );
        assert!(route(&lines(&[1]), &[], true).is_err(), "no stores");
    }
}
