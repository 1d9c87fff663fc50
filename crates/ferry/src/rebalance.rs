//! Which group leaderships a rebalance moves, and where (pure): each node
//! should lead at most `ceil(groups / nodes)` of the groups; a group whose
//! leader leads more is given to its least loaded live member below that.

use std::collections::BTreeMap;

/// One group as this node sees it: its id, its voters, its leader.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub id: u64,
    pub voters: Vec<u64>,
    pub leader: Option<u64>,
}

/// The moves (group, new leader) that even out the leaderships of
/// `groups` over `nodes` (the live ones; a member not among them is never
/// chosen). Groups without a leader are left alone.
pub fn plan(groups: &[GroupView], nodes: &[u64]) -> Vec<(u64, u64)> {
    let mut count: BTreeMap<u64, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    let led: Vec<&GroupView> = groups.iter().filter(|g| g.leader.is_some()).collect();
    for g in &led {
        if let Some(l) = g.leader {
            *count.entry(l).or_default() += 1;
        }
    }
    if nodes.is_empty() {
        return Vec::new();
    }
    let target = led.len().div_ceil(nodes.len());
    let mut moves = Vec::new();
    let mut sorted = led;
    sorted.sort_by_key(|g| g.id);
    for g in sorted {
        let Some(l) = g.leader else { continue };
        if count.get(&l).copied().unwrap_or(0) <= target {
            continue;
        }
        let to = g
            .voters
            .iter()
            .filter(|v| **v != l)
            .filter_map(|v| count.get(v).map(|c| (*c, *v)))
            .filter(|(c, _)| *c < target)
            .min();
        if let Some((_, to)) = to {
            *count.entry(l).or_default() -= 1;
            *count.entry(to).or_default() += 1;
            moves.push((g.id, to));
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(id: u64, leader: u64) -> GroupView {
        GroupView {
            id,
            voters: vec![1, 2, 3],
            leader: Some(leader),
        }
    }

    fn loads(groups: &[GroupView], moves: &[(u64, u64)]) -> BTreeMap<u64, usize> {
        let mut out = BTreeMap::new();
        for x in groups {
            let l = moves
                .iter()
                .find(|(id, _)| *id == x.id)
                .map_or(x.leader.unwrap_or(0), |m| m.1);
            *out.entry(l).or_insert(0) += 1;
        }
        out
    }

    #[test]
    fn six_groups_led_by_one_node_end_two_each() {
        let groups: Vec<GroupView> = (0..6).map(|i| g(i, 1)).collect();
        let moves = plan(&groups, &[1, 2, 3]);
        assert_eq!(moves.len(), 4);
        assert_eq!(
            loads(&groups, &moves).into_values().collect::<Vec<_>>(),
            vec![2, 2, 2]
        );
    }

    #[test]
    fn a_balanced_cluster_moves_nothing_and_a_down_node_gets_nothing() {
        let balanced: Vec<GroupView> = (0..6).map(|i| g(i, i % 3 + 1)).collect();
        assert!(plan(&balanced, &[1, 2, 3]).is_empty());
        let skewed: Vec<GroupView> = (0..4).map(|i| g(i, 1)).collect();
        let moves = plan(&skewed, &[1, 2]);
        assert!(moves.iter().all(|(_, to)| *to == 2), "{moves:?}");
        assert_eq!(moves.len(), 2);
    }

    #[test]
    fn only_members_are_chosen_and_leaderless_groups_are_left() {
        let groups = vec![
            GroupView {
                id: 1,
                voters: vec![1, 2],
                leader: Some(1),
            },
            GroupView {
                id: 2,
                voters: vec![1, 2],
                leader: Some(1),
            },
            GroupView {
                id: 3,
                voters: vec![1, 2, 3],
                leader: None,
            },
        ];
        let moves = plan(&groups, &[1, 2, 3]);
        assert_eq!(moves, vec![(1, 2)]);
    }
}
