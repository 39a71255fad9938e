//! Pure planning: from the listeners the health layer wants to the map contents, as a delta
//! against what was last applied. No syscalls here; `writer` applies the delta.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use router_ebpf::{
    BACKEND_ACTIVE, BACKEND_DRAIN, BACKEND_SHUTDOWN, BALANCE_LEAST_CONN, BALANCE_ROUND_ROBIN,
    BALANCE_SOURCE_HASH, Backend, BackendSet, FAMILY_IPV4, FAMILY_IPV6, MAX_BACKENDS, MAX_SERVICES,
    MAX_SET, PROTO_TCP, SVC_F_SHUTDOWN_SESSIONS, Service, ServiceKey,
};

use crate::model::{BackendKey, BackendState, Balance, DesiredListener, ListenerKey};

/// Errors that make a desired state impossible to publish; the running state stays.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("listener {0}: more than {MAX_SET} nodes")]
    TooManyNodes(String),
    #[error("more than {MAX_SERVICES} listeners")]
    TooManyServices,
    #[error("more than {MAX_BACKENDS} backend entries")]
    TooManyBackends,
    #[error("listener {0}: IPv6 is not served by the data path yet")]
    Ipv6(String),
}

/// What the kernel maps hold, as far as pgrouter wrote them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub services: BTreeMap<ServiceKey, Service>,
    pub sets: BTreeMap<u32, BackendSet>,
    pub backends: BTreeMap<u32, Backend>,
    /// Listener → service id; kept across plans so ids (and counters) are stable.
    pub service_ids: BTreeMap<ListenerKey, u32>,
    /// (listener, node) → backend id.
    pub backend_ids: BTreeMap<BackendKey, u32>,
}

/// Map writes in a safe order: backends first (so a published set never names an unwritten
/// backend), then sets, then services; removals last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapDelta {
    /// Backends leaving SHUTDOWN (or new): their flow count is zeroed first. While shut down
    /// the kernel stops counting their closes and the controller sweeps their flows.
    pub reset_conns: Vec<u32>,
    pub backends: Vec<(u32, Backend)>,
    /// Backends entering SHUTDOWN: the controller resets and removes their flows.
    pub newly_shutdown: Vec<u32>,
    pub sets: Vec<(u32, BackendSet)>,
    pub services: Vec<(ServiceKey, Service)>,
    pub remove_services: Vec<ServiceKey>,
    pub remove_sets: Vec<u32>,
    /// Retired backends no flow names any more: their entries are cleared (unused) and
    /// their ids free for new backends.
    pub free_backends: Vec<u32>,
}

impl MapDelta {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Turns an address into the ABI's `[Be32; 4]` form and family.
pub fn addr_words(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_IPV4),
        IpAddr::V6(v6) => {
            let mut w = [0u32; 4];
            for (w, c) in w.iter_mut().zip(v6.octets().as_chunks::<4>().0) {
                *w = u32::from_ne_bytes(*c);
            }
            (w, FAMILY_IPV6)
        }
    }
}

pub fn service_key(vip: IpAddr, port: u16) -> ServiceKey {
    let (addr, family) = addr_words(vip);
    ServiceKey {
        addr,
        port: port.to_be(),
        proto: PROTO_TCP,
        family,
    }
}

fn balance_code(b: Balance) -> u8 {
    match b {
        Balance::RoundRobin => BALANCE_ROUND_ROBIN,
        Balance::LeastConn => BALANCE_LEAST_CONN,
        Balance::SourceHash => BALANCE_SOURCE_HASH,
    }
}

fn alloc(used: &BTreeSet<u32>, max: u32) -> Option<u32> {
    (0..max).find(|i| !used.contains(i))
}

/// Computes the delta from `applied` to `desired` and the new applied state. Ids are stable
/// per listener name and per (listener, node); entries of vanished listeners or nodes are
/// shut down (their flows reset) and their ids are not reused while they linger.
///
/// `now_ns` (CLOCK_MONOTONIC, the kernel's flow clock) stamps a set that becomes empty: the
/// kernel holds SYNs to it for the service's `empty_hold_ms` from that instant. A set that
/// stays empty keeps its stamp (and its generation), so republishing never extends the hold.
pub fn plan(
    desired: &[DesiredListener],
    applied: &Applied,
    snat_ports: (u16, u16),
    now_ns: u64,
) -> Result<(MapDelta, Applied), PlanError> {
    let mut next = Applied {
        service_ids: applied.service_ids.clone(),
        backend_ids: applied.backend_ids.clone(),
        ..Applied::default()
    };
    // Ids of services still in the maps (named, or left by an earlier run and claimed by no
    // listener) are not given to a new listener in this plan.
    let mut used_svc: BTreeSet<u32> = next
        .service_ids
        .values()
        .copied()
        .chain(applied.services.values().map(|s| s.id))
        .collect();
    // Retired entries stay SHUTDOWN and are never reused: an idle flow still pointing at one
    // must not come back to life on another node.
    let mut used_be: BTreeSet<u32> = next
        .backend_ids
        .values()
        .chain(applied.backends.keys())
        .copied()
        .collect();
    let wanted: BTreeSet<&ListenerKey> = desired.iter().map(|l| &l.key).collect();

    for l in desired {
        if l.vip.is_ipv6() {
            return Err(PlanError::Ipv6(l.key.to_string()));
        }
        if l.backends.len() > MAX_SET {
            return Err(PlanError::TooManyNodes(l.key.to_string()));
        }
        let id = match next.service_ids.get(&l.key) {
            Some(id) => *id,
            None => {
                let id = alloc(&used_svc, MAX_SERVICES).ok_or(PlanError::TooManyServices)?;
                used_svc.insert(id);
                next.service_ids.insert(l.key.clone(), id);
                id
            }
        };
        let (snat_addr, _) = addr_words(l.snat_addr);
        let svc = Service {
            id,
            balance: balance_code(l.balance),
            flags: if l.shutdown_sessions {
                SVC_F_SHUTDOWN_SESSIONS
            } else {
                0
            },
            _pad: [0; 2],
            snat_addr,
            snat_port_min: snat_ports.0,
            snat_port_max: snat_ports.1,
            empty_hold_ms: l.empty_hold_ms,
        };
        next.services.insert(service_key(l.vip, l.port), svc);

        let mut set = BackendSet::default();
        for b in &l.backends {
            let k = BackendKey::new(l.key.clone(), b.node.clone());
            let bid = match next.backend_ids.get(&k) {
                Some(id) => *id,
                None => {
                    let id = alloc(&used_be, MAX_BACKENDS).ok_or(PlanError::TooManyBackends)?;
                    used_be.insert(id);
                    next.backend_ids.insert(k, id);
                    id
                }
            };
            let (addr, family) = addr_words(b.addr);
            let state = match b.state {
                BackendState::Active => BACKEND_ACTIVE,
                BackendState::Drain => BACKEND_DRAIN,
                // The health layer has already applied `on_marked_down`: a Shutdown that
                // reaches here must reset sessions even on a `keep` listener (a demoted or
                // split-brain-losing primary must never keep taking writes).
                BackendState::Shutdown => BACKEND_SHUTDOWN,
            };
            next.backends.insert(
                bid,
                Backend {
                    addr,
                    port: b.port.to_be(),
                    family,
                    state,
                    service_id: id,
                    maxconn: b.maxconn,
                },
            );
            // A slot is always free: a listener with more backends than a set holds was
            // refused above.
            if state == BACKEND_ACTIVE
                && let Some(slot) = set.ids.get_mut(set.count as usize)
            {
                *slot = bid;
                set.count += 1;
            }
        }
        let prev = applied.sets.get(&id);
        set.generation = match prev {
            Some(p) if p.count == set.count && p.ids == set.ids => p.generation,
            Some(p) => p.generation.wrapping_add(1),
            None => 1,
        };
        set.empty_since_ns = match prev {
            _ if set.count > 0 => 0,
            Some(p) if p.count == 0 && p.empty_since_ns != 0 => p.empty_since_ns,
            _ => now_ns,
        };
        next.sets.insert(id, set);
    }

    // Backends of vanished nodes or listeners (a vanished listener has no nodes left):
    // shut down so their flows end, ids retired.
    let mut retired = Vec::new();
    for (k, bid) in &applied.backend_ids {
        let gone = !desired
            .iter()
            .any(|l| l.key == k.listener && l.backends.iter().any(|b| b.node == k.node));
        if gone {
            if let Some(old) = applied.backends.get(bid) {
                next.backends.insert(
                    *bid,
                    Backend {
                        state: BACKEND_SHUTDOWN,
                        ..*old
                    },
                );
            }
            retired.push(k.clone());
        }
    }
    for k in retired {
        next.backend_ids.remove(&k);
    }
    for (id, b) in &applied.backends {
        next.backends.entry(*id).or_insert(*b);
    }
    next.service_ids.retain(|key, _| wanted.contains(key));

    let mut delta = MapDelta::default();
    for (id, b) in &next.backends {
        let old = applied.backends.get(id);
        if old != Some(b) {
            delta.backends.push((*id, *b));
            let was_down = old.is_none_or(|o| o.state == BACKEND_SHUTDOWN);
            if b.state != BACKEND_SHUTDOWN && was_down {
                delta.reset_conns.push(*id);
            }
            if b.state == BACKEND_SHUTDOWN && old.is_some_and(|o| o.state != BACKEND_SHUTDOWN) {
                delta.newly_shutdown.push(*id);
            }
        }
    }
    for (id, s) in &next.sets {
        if applied.sets.get(id) != Some(s) {
            delta.sets.push((*id, *s));
        }
    }
    for (k, s) in &next.services {
        if applied.services.get(k) != Some(s) {
            delta.services.push((*k, *s));
        }
    }
    for k in applied.services.keys() {
        if !next.services.contains_key(k) {
            delta.remove_services.push(*k);
        }
    }
    for id in applied.sets.keys() {
        if !next.sets.contains_key(id) {
            delta.remove_sets.push(*id);
        }
    }
    Ok((delta, next))
}

/// Retired backends (shut down, named by no listener's node any more) among `unreferenced`
/// — ids no flow entry named during a whole GC cycle that started after the retirement —
/// are freed: cleared in the map, removed from what is applied, so `plan` can give the id to
/// a new backend. Without this, every reload that removes a node would use up an id for
/// good, and after 4,096 of them no plan could be published.
pub fn free_retired(applied: &Applied, unreferenced: &BTreeSet<u32>) -> (MapDelta, Applied) {
    let named: BTreeSet<u32> = applied.backend_ids.values().copied().collect();
    let mut next = applied.clone();
    let mut delta = MapDelta::default();
    for id in unreferenced {
        let retired = applied
            .backends
            .get(id)
            .is_some_and(|b| b.state == BACKEND_SHUTDOWN && !named.contains(id));
        if retired {
            next.backends.remove(id);
            delta.free_backends.push(*id);
        }
    }
    (delta, next)
}

/// Backend ids that are retired in `applied`: shut down and named by no listener's node.
pub fn retired(applied: &Applied) -> BTreeSet<u32> {
    let named: BTreeSet<u32> = applied.backend_ids.values().copied().collect();
    applied
        .backends
        .iter()
        .filter(|(id, b)| b.state == BACKEND_SHUTDOWN && !named.contains(id))
        .map(|(id, _)| *id)
        .collect()
}

impl Applied {
    /// After a restart, names the entries an earlier controller left in the pinned maps by
    /// matching them with the listeners about to be applied: a service by VIP:port, a backend
    /// by (service, address, port). Matched ids are kept, so tracked flows keep their meaning;
    /// unmatched entries are retired (shut down) by the next plan.
    pub fn adopt(&mut self, desired: &[DesiredListener]) {
        for l in desired {
            let key = service_key(l.vip, l.port);
            let Some(svc) = self.services.get(&key) else {
                continue;
            };
            let sid = svc.id;
            self.service_ids.insert(l.key.clone(), sid);
            for b in &l.backends {
                let (addr, _) = addr_words(b.addr);
                let found = self.backends.iter().find(|(id, e)| {
                    e.service_id == sid
                        && e.addr == addr
                        && e.port == b.port.to_be()
                        && !self.backend_ids.values().any(|v| v == *id)
                });
                if let Some((id, _)) = found {
                    self.backend_ids
                        .insert(BackendKey::new(l.key.clone(), b.node.clone()), *id);
                }
            }
        }
        // Services in the maps that no listener claims are removed by the next plan, which
        // also keeps their ids from new listeners.
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::DesiredBackend;

    fn be(node: &str, last: u8, state: BackendState) -> DesiredBackend {
        DesiredBackend {
            node: node.into(),
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)),
            port: 5432,
            maxconn: 100,
            state,
        }
    }

    /// `"pg/w"` → cluster `pg`, listener `w` (test shorthand).
    fn listener(name: &str, port: u16, backends: Vec<DesiredBackend>) -> DesiredListener {
        let (cluster, listener) = name.split_once('/').unwrap_or(("", name));
        DesiredListener {
            key: ListenerKey::new(cluster, listener),
            vip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
            port,
            balance: Balance::RoundRobin,
            shutdown_sessions: true,
            empty_hold_ms: 8_000,
            snat_addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
            backends,
        }
    }

    fn write_read() -> Vec<DesiredListener> {
        use BackendState::*;
        vec![
            listener(
                "pg/w",
                5000,
                vec![be("a", 11, Active), be("b", 12, Shutdown)],
            ),
            listener("pg/r", 5001, vec![be("a", 11, Drain), be("b", 12, Active)]),
        ]
    }

    const PORTS: (u16, u16) = (40000, 40999);
    const NOW: u64 = 1_000_000_000_000;

    #[test]
    fn first_plan_writes_everything_with_only_active_members_in_sets() {
        let (d, next) = plan(&write_read(), &Applied::default(), PORTS, NOW).unwrap();
        assert_eq!(d.backends.len(), 4);
        assert_eq!(d.services.len(), 2);
        let w = next.service_ids[&ListenerKey::new("pg", "w")];
        let set = next.sets[&w];
        assert_eq!(set.count, 1);
        assert_eq!(
            set.ids[0],
            next.backend_ids[&BackendKey::new(ListenerKey::new("pg", "w"), "a")]
        );
        assert_eq!(set.generation, 1);
        // New backends start with a zeroed flow count.
        assert_eq!(d.reset_conns.len(), 3, "the shut-down entry needs no reset");
    }

    #[test]
    fn unchanged_desired_state_is_an_empty_delta() {
        let (_, a) = plan(&write_read(), &Applied::default(), PORTS, NOW).unwrap();
        let (d, b) = plan(&write_read(), &a, PORTS, NOW).unwrap();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(a, b);
    }

    #[test]
    fn failover_publishes_a_new_generation_and_shuts_the_old_primary() {
        let (_, a) = plan(&write_read(), &Applied::default(), PORTS, NOW).unwrap();
        let mut l = write_read();
        l[0].backends[0].state = BackendState::Shutdown;
        l[0].backends[1].state = BackendState::Active;
        let (d, b) = plan(&l, &a, PORTS, NOW).unwrap();
        let w = b.service_ids[&ListenerKey::new("pg", "w")];
        assert_eq!(b.sets[&w].generation, 2);
        assert_eq!(
            b.sets[&w].ids[0],
            b.backend_ids[&BackendKey::new(ListenerKey::new("pg", "w"), "b")]
        );
        let old = a.backend_ids[&BackendKey::new(ListenerKey::new("pg", "w"), "a")];
        assert_eq!(d.newly_shutdown, vec![old]);
        let new = a.backend_ids[&BackendKey::new(ListenerKey::new("pg", "w"), "b")];
        assert_eq!(d.reset_conns, vec![new], "reactivated entry is zeroed");
        // Ids are stable.
        assert_eq!(a.backend_ids, b.backend_ids);
    }

    #[test]
    fn shutdown_is_written_as_shutdown_even_on_a_keep_listener() {
        // `keep` is applied by the health layer (it emits Drain for a plain mark-down); a
        // Shutdown it still emits (demoted primary, split-brain loser) must reset sessions.
        let mut l = write_read();
        l[0].shutdown_sessions = false;
        let (_, a) = plan(&l, &Applied::default(), PORTS, NOW).unwrap();
        let b = a.backend_ids[&BackendKey::new(ListenerKey::new("pg", "w"), "b")];
        assert_eq!(a.backends[&b].state, BACKEND_SHUTDOWN);
        let drained = a.backend_ids[&BackendKey::new(ListenerKey::new("pg", "r"), "a")];
        assert_eq!(a.backends[&drained].state, BACKEND_DRAIN);
    }

    #[test]
    fn removed_node_is_shut_down_and_its_id_never_reused() {
        let (_, a) = plan(&write_read(), &Applied::default(), PORTS, NOW).unwrap();
        let old = a.backend_ids[&BackendKey::new(ListenerKey::new("pg", "r"), "b")];
        let mut l = write_read();
        l[1].backends.pop();
        let (d, b) = plan(&l, &a, PORTS, NOW).unwrap();
        assert_eq!(b.backends[&old].state, BACKEND_SHUTDOWN);
        assert!(d.newly_shutdown.contains(&old));
        l[1].backends.push(be("c", 13, BackendState::Active));
        let (_, c) = plan(&l, &b, PORTS, NOW).unwrap();
        let new = c.backend_ids[&BackendKey::new(ListenerKey::new("pg", "r"), "c")];
        assert_ne!(new, old);
    }

    #[test]
    fn removed_listener_is_deleted_from_services_and_sets() {
        let (_, a) = plan(&write_read(), &Applied::default(), PORTS, NOW).unwrap();
        let l = vec![write_read().remove(0)];
        let (d, b) = plan(&l, &a, PORTS, NOW).unwrap();
        assert_eq!(
            d.remove_services,
            vec![service_key(
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
                5001
            )]
        );
        assert_eq!(d.remove_sets.len(), 1);
        assert!(!b.service_ids.contains_key(&ListenerKey::new("pg", "r")));
    }

    #[test]
    fn adopt_after_restart_keeps_ids_and_yields_no_writes() {
        let (_, a) = plan(&write_read(), &Applied::default(), PORTS, NOW).unwrap();
        // What a restarted controller reads back from the pinned maps: no names.
        let mut read = Applied {
            services: a.services.clone(),
            sets: a.sets.clone(),
            backends: a.backends.clone(),
            ..Applied::default()
        };
        read.adopt(&write_read());
        assert_eq!(read.service_ids, a.service_ids);
        assert_eq!(read.backend_ids, a.backend_ids);
        let (d, _) = plan(&write_read(), &read, PORTS, NOW).unwrap();
        assert!(d.is_empty(), "restart rewrites nothing: {d:?}");
    }

    /// The write listener with every node out of its set.
    fn write_empty() -> Vec<DesiredListener> {
        let mut l = write_read();
        l[0].backends[0].state = BackendState::Drain;
        l
    }

    fn write_set(a: &Applied) -> BackendSet {
        a.sets[&a.service_ids[&ListenerKey::new("pg", "w")]]
    }

    /// The kernel holds SYNs from the instant the set became empty.
    #[test]
    fn a_set_that_becomes_empty_is_stamped_with_now() {
        let (_, a) = plan(&write_read(), &Applied::default(), PORTS, NOW).unwrap();
        assert_eq!(
            write_set(&a).empty_since_ns,
            0,
            "a non-empty set has no stamp"
        );
        let (d, b) = plan(&write_empty(), &a, PORTS, NOW + 5).unwrap();
        assert_eq!(write_set(&b).count, 0);
        assert_eq!(write_set(&b).empty_since_ns, NOW + 5);
        assert!(d.sets.iter().any(|(_, s)| s.empty_since_ns == NOW + 5));
    }

    /// Republishing an empty set (another listener changed, a reload) must not extend the hold.
    #[test]
    fn empty_since_is_kept_while_the_set_stays_empty() {
        let (_, a) = plan(&write_read(), &Applied::default(), PORTS, NOW).unwrap();
        let (_, b) = plan(&write_empty(), &a, PORTS, NOW + 5).unwrap();
        let mut l = write_empty();
        l[1].backends[0].state = BackendState::Active;
        let (d, c) = plan(&l, &b, PORTS, NOW + 9_000).unwrap();
        assert_eq!(write_set(&c).empty_since_ns, NOW + 5);
        assert_eq!(write_set(&c).generation, write_set(&b).generation);
        let w = c.service_ids[&ListenerKey::new("pg", "w")];
        assert!(
            !d.sets.iter().any(|(id, _)| *id == w),
            "the unchanged empty set is not rewritten"
        );
    }

    #[test]
    fn empty_since_is_cleared_when_a_member_returns() {
        let (_, a) = plan(&write_empty(), &Applied::default(), PORTS, NOW).unwrap();
        assert_eq!(write_set(&a).empty_since_ns, NOW);
        let (_, b) = plan(&write_read(), &a, PORTS, NOW + 5).unwrap();
        assert_eq!(write_set(&b).count, 1);
        assert_eq!(write_set(&b).empty_since_ns, 0);
    }

    #[test]
    fn a_set_empty_again_after_a_member_came_back_gets_a_new_stamp() {
        let (_, a) = plan(&write_empty(), &Applied::default(), PORTS, NOW).unwrap();
        let (_, b) = plan(&write_read(), &a, PORTS, NOW + 5).unwrap();
        let (_, c) = plan(&write_empty(), &b, PORTS, NOW + 9).unwrap();
        assert_eq!(write_set(&c).empty_since_ns, NOW + 9);
    }

    /// A stamp of 0 (an earlier controller that did not stamp) is not a time: restamp.
    #[test]
    fn an_empty_set_without_a_stamp_is_stamped_now() {
        let (_, mut a) = plan(&write_empty(), &Applied::default(), PORTS, NOW).unwrap();
        let w = a.service_ids[&ListenerKey::new("pg", "w")];
        if let Some(s) = a.sets.get_mut(&w) {
            s.empty_since_ns = 0;
        }
        let (_, b) = plan(&write_empty(), &a, PORTS, NOW + 7).unwrap();
        assert_eq!(write_set(&b).empty_since_ns, NOW + 7);
    }

    #[test]
    fn the_service_carries_the_listener_empty_hold() {
        let mut l = write_read();
        l[0].empty_hold_ms = 0;
        let (_, a) = plan(&l, &Applied::default(), PORTS, NOW).unwrap();
        let holds: Vec<u32> = a.services.values().map(|s| s.empty_hold_ms).collect();
        assert_eq!(holds.len(), 2);
        assert!(holds.contains(&0) && holds.contains(&8_000), "{holds:?}");
    }

    #[test]
    fn too_many_nodes_is_refused() {
        let many = (0..40)
            .map(|i| be(&format!("n{i}"), i as u8 + 1, BackendState::Active))
            .collect();
        let err = plan(
            &[listener("pg/big", 5000, many)],
            &Applied::default(),
            PORTS,
            NOW,
        )
        .unwrap_err();
        assert_eq!(err, PlanError::TooManyNodes("pg/big".into()));
    }

    /// A node removed by a reload retires its backend; once no flow names it, its id is
    /// freed and the next new backend gets it: ids never run out however often reloads add
    /// and remove nodes.
    #[test]
    fn a_retired_backend_id_is_freed_once_unreferenced_and_reused() {
        let key = ListenerKey::new("pg", "PG1");
        let lst = |nodes: Vec<DesiredBackend>| DesiredListener {
            key: key.clone(),
            vip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
            port: 5000,
            balance: Balance::RoundRobin,
            shutdown_sessions: true,
            snat_addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
            empty_hold_ms: 0,
            backends: nodes,
        };
        let (_, a1) = plan(
            &[lst(vec![
                be("pg1", 11, BackendState::Active),
                be("pg2", 12, BackendState::Active),
            ])],
            &Applied::default(),
            (40000, 44999),
            1,
        )
        .unwrap();
        let pg2 = a1.backend_ids[&BackendKey::new(key.clone(), "pg2")];
        // pg2 leaves the config: retired (shut down), its id still held.
        let (_, a2) = plan(
            &[lst(vec![be("pg1", 11, BackendState::Active)])],
            &a1,
            (40000, 44999),
            2,
        )
        .unwrap();
        assert_eq!(retired(&a2), BTreeSet::from([pg2]));
        // A flow still names it: nothing freed.
        let (d, a3) = free_retired(&a2, &BTreeSet::new());
        assert!(d.is_empty() && a3 == a2);
        // An id that is not retired (pg1, live) is never freed, even if unreferenced.
        let pg1 = a2.backend_ids[&BackendKey::new(key.clone(), "pg1")];
        let (d, a3) = free_retired(&a2, &BTreeSet::from([pg1, pg2]));
        assert_eq!(d.free_backends, vec![pg2]);
        assert!(!a3.backends.contains_key(&pg2) && a3.backends.contains_key(&pg1));
        // A new node gets the freed id.
        let (_, a4) = plan(
            &[lst(vec![
                be("pg1", 11, BackendState::Active),
                be("pg3", 13, BackendState::Active),
            ])],
            &a3,
            (40000, 44999),
            3,
        )
        .unwrap();
        assert_eq!(a4.backend_ids[&BackendKey::new(key.clone(), "pg3")], pg2);
        // Thousands of reloads swapping a node in and out never exhaust the ids.
        let mut a = a4;
        for i in 0..(MAX_BACKENDS as usize * 2) {
            let node = if i % 2 == 0 { "pg4" } else { "pg5" };
            let (_, n) = plan(
                &[lst(vec![
                    be("pg1", 11, BackendState::Active),
                    be(node, 14, BackendState::Active),
                ])],
                &a,
                (40000, 44999),
                4 + i as u64,
            )
            .unwrap_or_else(|e| panic!("reload {i}: {e}"));
            let unref = retired(&n);
            a = free_retired(&n, &unref).1;
        }
        assert!(a.backends.len() <= 3, "{} entries held", a.backends.len());
    }
}
