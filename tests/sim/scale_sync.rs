//! The fleet simulation's sync sessions: the client's session choice
//! (`cluster::sync_sched`), the bookkeeping summary, needs and claims (`cluster::sync_state`),
//! the server's session bound and the timeouts, with the messages carried over the
//! simulated network (stream messages: retransmitted, lost across a cut).

use super::*;

impl ScaleSim {
    /// Node `i` declared `j` down: the transport closes their connection, so the sync
    /// sessions riding it fail at once on both ends (`Transport::close_peer`).
    pub(super) fn close_connection(&mut self, i: usize, j: usize) {
        self.conns.remove(&(i.min(j), i.max(j)));
        let riding: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| (s.client, s.server) == (i, j) || (s.client, s.server) == (j, i))
            .map(|(sid, _)| *sid)
            .collect();
        for sid in riding {
            self.finish_client(sid, Outcome::Failed);
            self.free_slot(sid);
        }
    }

    /// Opens the sessions the node's scheduler wants now.
    pub(super) fn start_sessions(&mut self, i: usize) {
        if !self.nodes[i].sched.wants() {
            return;
        }
        let t = self.instant();
        let node = &mut self.nodes[i];
        let started = node.sched.start(&node.sync_peers, t, &mut self.rng);
        for addr in started {
            let j = self.addrs[&addr];
            self.next_sid += 1;
            let sid = self.next_sid;
            let gen = self.nodes[i].gen;
            self.sessions.insert(
                sid,
                Session {
                    client: i,
                    server: j,
                    client_gen: gen,
                    server_gen: 0,
                    answered: false,
                    needs: Vec::new(),
                    serving: false,
                    client_done: false,
                },
            );
            self.traffic.sessions += 1;
            self.sync_msg(40);
            if let Some(at) = self.stream(i, j) {
                self.push(at, Ev::Start { sid });
            }
            let at = self.now + ANSWER_TIMEOUT.as_micros() as u64;
            self.push(at, Ev::AnswerTimeout { sid });
        }
    }

    /// The client ends the session: its claims are released and its scheduler told (unless
    /// the client process is gone).
    pub(super) fn finish_client(&mut self, sid: u64, outcome: Outcome) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.client_done {
            return;
        }
        s.client_done = true;
        let (i, server, gen, serving) = (s.client, s.server, s.client_gen, s.serving);
        let needs = std::mem::take(&mut s.needs);
        if !serving {
            self.sessions.remove(&sid);
        }
        if !self.live(i, gen) {
            return;
        }
        if outcome == Outcome::Failed {
            self.traffic.sessions_failed += 1;
        }
        self.nodes[i].claims.release(&needs);
        let t = self.instant();
        let gaps = self.nodes[i].book.gap_count();
        self.nodes[i].sched.ended(addr_of(server), outcome, t, gaps);
        self.start_sessions(i);
    }

    /// The server frees the session's serving slot.
    pub(super) fn free_slot(&mut self, sid: u64) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.serving {
            s.serving = false;
            let (srv, gen) = (s.server, s.server_gen);
            if self.nodes[srv].gen == gen {
                self.nodes[srv].serving -= 1;
            }
        }
        if s.client_done {
            self.sessions.remove(&sid);
        }
    }

    pub(super) fn session_event(&mut self, ev: Ev) {
        match ev {
            Ev::Start { sid } => {
                let Some(s) = self.sessions.get(&sid) else {
                    return;
                };
                let (c, srv) = (s.client, s.server);
                if !self.nodes[srv].up || s.client_done {
                    return; // the client's answer timeout ends it
                }
                let state = if self.nodes[srv].serving >= MAX_SERVED {
                    self.sync_msg(12);
                    None
                } else {
                    self.nodes[srv].serving += 1;
                    let gen = self.nodes[srv].gen;
                    let s = self.sessions.get_mut(&sid).expect("present");
                    (s.serving, s.server_gen) = (true, gen);
                    let st = state_of(&self.nodes[srv].book, self.nodes[srv].actor);
                    self.sync_msg(codec::encode(&Msg::SyncState(st.clone()), 0).len());
                    self.push(self.now + STEP_TIMEOUT, Ev::ServeTimeout { sid });
                    Some(st)
                };
                if let Some(at) = self.stream(srv, c) {
                    self.push(at, Ev::Answer { sid, state });
                }
            }
            Ev::Answer { sid, state } => {
                let Some(s) = self.sessions.get_mut(&sid) else {
                    return;
                };
                if s.client_done {
                    return;
                }
                s.answered = true;
                let (c, srv) = (s.client, s.server);
                let Some(theirs) = state else {
                    self.finish_client(sid, Outcome::Failed);
                    return;
                };
                let node = &mut self.nodes[c];
                let needs = compute_needs(&node.book, node.actor, &theirs);
                let needs = node.claims.claim(needs, MAX_NEEDS_PER_SESSION);
                self.sync_msg(codec::encode(&Msg::SyncRequest(needs.clone()), 0).len());
                let empty = needs.is_empty();
                self.sessions.get_mut(&sid).expect("present").needs = needs.clone();
                if let Some(at) = self.stream(c, srv) {
                    self.push(at, Ev::Request { sid, needs });
                }
                if empty {
                    self.finish_client(sid, Outcome::Received(0));
                }
            }
            Ev::Request { sid, needs } => {
                let Some(s) = self.sessions.get(&sid) else {
                    return;
                };
                let (c, srv, serving) = (s.client, s.server, s.serving);
                if !serving {
                    return;
                }
                self.free_slot(sid);
                let mut versions = Vec::new();
                for need in &needs {
                    if let Need::Full {
                        actor,
                        versions: (a, b),
                    } = need
                    {
                        for v in *a..=*b {
                            if self.nodes[srv].book.knows(actor, v) {
                                versions.push((*actor, v));
                            }
                        }
                    }
                }
                for _ in &versions {
                    self.sync_msg(self.chunk_len as usize);
                }
                self.sync_msg(8); // SyncDone
                if !self.sessions.contains_key(&sid) {
                    return; // the client is done already
                }
                match self.stream(srv, c) {
                    Some(at) => self.push(at, Ev::Chunks { sid, versions }),
                    None => self.finish_client(sid, Outcome::Failed), // cut off: the stream breaks
                }
            }
            Ev::Chunks { sid, versions } => {
                let Some(s) = self.sessions.get(&sid) else {
                    return;
                };
                let (c, gen) = (s.client, s.client_gen);
                if s.client_done {
                    return;
                }
                let n = versions.len();
                if self.live(c, gen) {
                    for (actor, v) in versions {
                        self.traffic.sync_copies += 1;
                        self.hold(c, actor, v);
                    }
                }
                self.finish_client(sid, Outcome::Received(n));
            }
            Ev::AnswerTimeout { sid } => {
                let Some(s) = self.sessions.get(&sid) else {
                    return;
                };
                if s.answered || s.client_done {
                    return;
                }
                let (c, srv) = (s.client, s.server);
                self.finish_client(sid, Outcome::Failed);
                // The client closes its stream; a server it can still reach notices at once,
                // one cut off waits for its step timeout.
                if !self.cut_between(c, srv) {
                    self.free_slot(sid);
                }
            }
            Ev::ServeTimeout { sid } => {
                if self.sessions.get(&sid).is_some_and(|s| s.serving) {
                    self.finish_client(sid, Outcome::Failed);
                    self.free_slot(sid);
                }
            }
            _ => unreachable!("not a session event"),
        }
    }
}
