/* metrics.h: per-shard counters and their rendering for /debug/varz (Prometheus
 * text; expvar.c makes /debug/vars, JSON, from that page).
 *
 * Ownership: each shard's struct stats has exactly one writer, its shard
 * thread, which updates with relaxed load + store (no read-modify-write lock).
 * Any thread may read with relaxed loads and sum across shards; a sum may be a
 * few events stale, never torn. Gauges are signed: a connection that moves
 * from shard A to B is -1 on A and +1 on B, so only the sum means anything. */
#ifndef DERPD_METRICS_H
#define DERPD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "server/operations/stats_hist.h"

/* X(name, prometheus name, type, help); an empty name is internal, not
 * rendered as it is (operations/stats_page.c derives metrics from it). */
#define STATS_SCALARS(X)                                                                  \
  X(accepts, "derp_accepts", "counter", "connections that asked for DERP (an upgrade to DERP or WebSocket), as derper counts") \
  X(cur_conns, "derp_current_connections", "gauge", "client connections registered here (duplicates and mesh peers included), as derper counts") \
  X(tcp_accepts, "derpd_tcp_accepts", "counter", "TCP connections accepted, every listener and purpose") \
  X(open_conns, "derpd_open_connections", "gauge", "connections open, any state (handshakes, HTTP requests, mesh links)") \
  X(cur_home, "derp_current_home_connections", "gauge", "clients that said this is home") \
  X(clients_total, "derp_clients_total", "gauge", "keys this node knows in the region: local or remote") \
  X(clients_accepted, "derpd_clients_accepted", "counter", "clients that completed the handshake") \
  X(clients_remote, "derp_clients_remote", "gauge", "keys connected only to other nodes of the region") \
  X(watchers, "derp_watchers", "gauge", "mesh peers watching this node's clients")   \
  X(fwd_in, "derp_packets_forwarded_in", "counter", "packets that came in as ForwardPacket") \
  X(fwd_out, "derp_packets_forwarded_out", "counter", "packets sent to another node as ForwardPacket") \
  X(multifwd_created, "derp_multiforwarder_created", "counter", "keys that got a second forwarder") \
  X(multifwd_deleted, "derp_multiforwarder_deleted", "counter", "keys back to one forwarder") \
  X(fwd_delete_other, "derp_packet_forwarder_delete_other_value", "counter", "PeerGone from a node that was not the key's forwarder (a move, or a repeated broadcast)") \
  X(notideal, "derp_current_notideal_connections", "gauge", "clients whose Ideal-Node header named another node") \
  X(presence_frames, "derpd_mesh_presence_frames", "counter", "PeerPresent/PeerGone frames made for watchers") \
  X(watch_slots, "derpd_watch_dirty_slots", "gauge", "slots (48 bytes each) of the watchers' sets of keys not yet told, every shard's: at most 64 a watcher per shard once all is told") \
  X(presence_in, "derpd_mesh_presence_applied", "counter", "PeerPresent/PeerGone from mesh links applied to the forwarders") \
  X(mesh_paused, "derpd_mesh_reads_paused", "counter", "times a mesh conn's reads stopped for 1 ms: too many region messages waiting for inter-shard ring space") \
  X(outbox, "derpd_region_outbox_messages", "gauge", "region messages waiting for inter-shard ring space") \
  X(remote_refused, "derpd_mesh_remote_refused", "counter", "PeerPresent of a new remote key refused: -mesh-max-remote-keys reached") \
  X(cur_clients, "derp_clients_local", "gauge", "keys with a connection here")     \
  X(bytes_recv, "derp_bytes_received", "counter", "packet payload bytes received")        \
  X(bytes_sent, "derp_bytes_sent", "counter", "packet payload bytes sent")                \
  X(pkts_recv, "derp_packets_received", "counter", "packets received from clients")       \
  X(pkts_sent, "derp_packets_sent", "counter", "packets written to clients")              \
  X(recv_disco, "derp_packets_received_kind{kind=\"disco\"}", "counter", "")              \
  X(recv_other, "derp_packets_received_kind{kind=\"other\"}", "counter", "")              \
  X(got_ping, "derp_got_ping", "counter", "pings received")                               \
  X(sent_pong, "derp_sent_pong", "counter", "pongs sent")                                 \
  X(peer_gone_disc, "derp_peer_gone_disconnected_frames", "counter", "PeerGone(disconnected) sent") \
  X(peer_gone_nothere, "derp_peer_gone_not_here_frames", "counter", "PeerGone(not here) sent") \
  X(home_moves_in, "derp_home_moves_in", "counter", "clients that made this their home")  \
  X(home_moves_out, "derp_home_moves_out", "counter", "clients that moved home away")     \
  X(dup_keys, "derp_current_dup_client_keys", "gauge", "keys with more than one connection") \
  X(dup_conns, "derp_current_dup_client_conns", "gauge", "connections of duplicate keys") \
  X(dup_total, "derp_total_dup_client_conns", "counter", "connections registered while their key had another") \
  X(rl_waited, "", "", "") /* internal: derp_rate_limit_per_client_waited (-rate-config only) */ \
  X(rl_paused, "", "", "") /* internal: derpd_rate_limit_paused_connections (-rate-config only) */ \
  X(rl_pauses, "", "", "") /* internal: derpd_rate_limit_pauses (-rate-config only) */ \
  X(tls_req12, "", "", "") /* internal: derper_tls_request_version{version="1.2"} */ \
  X(tls_req13, "", "", "") /* internal: derper_tls_request_version{version="1.3"} */ \
  X(tls_active12, "", "", "") /* internal: derper_tls_active_version{version="1.2"} */ \
  X(tls_active13, "", "", "") /* internal: derper_tls_active_version{version="1.3"} */ \
  X(bootstrap_dns, "bootstrap_dns_requests", "counter", "/bootstrap-dns requests") \
  X(bdns_pub_hits, "bootstrap_dns_published_hits", "counter", "/bootstrap-dns?q= for a published name") \
  X(bdns_unpub_hits, "bootstrap_dns_unpublished_hits", "counter", "/bootstrap-dns?q= for an unpublished name") \
  X(bdns_unpub_misses, "bootstrap_dns_unpublished_misses", "counter", "/bootstrap-dns?q= for a name in neither list") \
  X(bdns_unpub_pct_misses, "bootstrap_dns_unpublished_percent_misses", "counter", "unpublished names not answered: the client is outside the rollout percentage") \
  X(keepalives, "derpd_keepalives_sent", "counter", "KeepAlive frames sent")              \
  X(unknown_frames, "derpd_unknown_frames", "counter", "unknown frame types skipped")     \
  X(handoffs, "derpd_handoffs", "counter", "connections moved to their owner shard")      \
  X(xshard_pkts, "derpd_cross_shard_packets", "counter", "packets passed between shards") \
  X(wakeups, "derpd_shard_wakeups_sent", "counter", "MSG_RING wake-ups sent")             \
  X(sends, "derpd_send_calls", "counter", "sendmsg operations completed")                 \
  X(waits_idle, "derpd_shard_waits{mode=\"idle\"}", "counter", "shard sleeps: idle = until the first event (or timer), batch = until --batch-wait passed or --batch-events completed") \
  X(waits_batch, "derpd_shard_waits{mode=\"batch\"}", "counter", "") \
  X(rtt_10ms, "derp_tcp_rtt{le=\"10ms\"}", "counter", "clients' TCP round-trip time (TCP_INFO) about every 10 s each, in derper's buckets; error: TCP_INFO failed at connect; non-tcp: WebSocket") \
  X(rtt_20ms, "derp_tcp_rtt{le=\"20ms\"}", "counter", "") \
  X(rtt_50ms, "derp_tcp_rtt{le=\"50ms\"}", "counter", "") \
  X(rtt_100ms, "derp_tcp_rtt{le=\"100ms\"}", "counter", "") \
  X(rtt_150ms, "derp_tcp_rtt{le=\"150ms\"}", "counter", "") \
  X(rtt_250ms, "derp_tcp_rtt{le=\"250ms\"}", "counter", "") \
  X(rtt_500ms, "derp_tcp_rtt{le=\"500ms\"}", "counter", "") \
  X(rtt_inf, "derp_tcp_rtt{le=\"inf\"}", "counter", "") \
  X(rtt_error, "derp_tcp_rtt{le=\"error\"}", "counter", "") \
  X(rtt_nontcp, "derp_tcp_rtt{le=\"non-tcp\"}", "counter", "") \
  X(accept_errors, "derpd_accept_errors", "counter", "accepts that failed (out of file descriptors or memory: retried at the next tick)") \
  X(recv_nobufs, "derpd_recv_no_buffers", "counter", "multishot recv out of buffers")     \
  X(http_requests, "derpd_http_requests", "counter", "HTTP requests served")              \
  X(sent_to_full, "derpd_sent_to_full", "counter", "PeerGone peers not tracked (bound)")  \
  X(sent_to_keys, "derpd_sent_to_keys", "gauge", "receivers remembered for PeerGone")    \
  X(restarting_sent, "derpd_restarting_sent", "counter", "Restarting frames at shutdown")   \
  X(handoff_waits, "derpd_handoff_waits", "counter", "handoffs delayed: handoff ring full") \
  X(ctrl_drops, "derpd_control_drops", "counter", "PeerGone/SAW messages dropped: ring full (PeerGone(disconnected): outbox past 65536)") \
  X(ctrl_frames_dropped, "derpd_conn_control_frames_dropped", "counter", "control frames (PeerGone, pong) a client's queue had no room for") \
  X(wake_failures, "derpd_wake_failures", "counter", "MSG_RING wake-ups that failed") \
  X(tls_handshakes, "derpd_tls_handshakes", "counter", "TLS handshakes completed")       \
  X(conns_plain, "derpd_conns_mode{mode=\"plain\"}", "counter", "clients established, by transport") \
  X(conns_tls, "derpd_conns_mode{mode=\"tls\"}", "counter", "")                           \
  X(conns_ktls, "derpd_conns_mode{mode=\"ktls\"}", "counter", "")                         \
  X(ktls_installs, "derpd_ktls_installs", "counter", "TLS connections switched to kTLS, both directions") \
  X(ktls_fallbacks, "derpd_ktls_fallbacks", "counter", "TLS connections kept in userspace TLS: kTLS could not take them") \
  X(ktls_failures, "derpd_ktls_failures", "counter", "kTLS key installs the kernel refused (RX: kept in userspace TLS, or closed under --ktls=require; TX: closed)") \
  X(ktls_close_notify, "derpd_ktls_close_notify", "counter", "close_notify alerts read under kTLS") \
  X(ws_upgrades, "derpd_websocket_upgrades", "counter", "WebSocket upgrades accepted") \
  X(ws_conns, "derpd_websocket_connections", "gauge", "WebSocket connections open")   \
  X(ws_pings, "derpd_websocket_pings", "counter", "WebSocket pings answered") \
  X(accepts_admitted, "tls_listener_accepted_connections", "counter", "connections -accept-connection-limit let in (derper's name; TLS or not)") \
  X(accepts_limited, "tls_listener_rejected_connections", "counter", "connections closed at once by -accept-connection-limit") \
  STATS_ADMISSION(X) \
  STATS_STUN(X)

/* Admission (admission/): -verify-client-url, -verify-clients. */
#define STATS_ADMISSION(X) \
  X(adm_allow, "derpd_admission_checks{result=\"allow\"}", "counter", "admission checks, by result (overload: no room to run one)") \
  X(adm_deny, "derpd_admission_checks{result=\"deny\"}", "counter", "") \
  X(adm_error, "derpd_admission_checks{result=\"error\"}", "counter", "") \
  X(adm_timeout, "derpd_admission_checks{result=\"timeout\"}", "counter", "") \
  X(adm_overload, "derpd_admission_checks{result=\"overload\"}", "counter", "") \
  X(adm_abandoned, "derpd_admission_checks{result=\"abandoned\"}", "counter", "") \
  X(adm_fail_open, "derpd_admission_fail_open", "counter", "clients admitted because the admission controller was unreachable (-verify-client-url-fail-open)") \
  X(adm_pending, "derpd_admission_pending", "gauge", "admission checks outstanding") \
  X(adm_mesh_skips, "derpd_admission_mesh_skips", "counter", "mesh peers admitted without a check")

/* STUN (stun/): derper's stun_requests{disposition} and stun_addrfamily{family},
 * and derpd's reasons for what it drops. */
#define STATS_STUN(X) \
  X(stun_ipv4, "stun_addrfamily{family=\"ipv4\"}", "counter", "STUN Binding Requests answered (or tried), by the client's address family") \
  X(stun_ipv6, "stun_addrfamily{family=\"ipv6\"}", "counter", "")                   \
  X(stun_not_stun, "stun_requests{disposition=\"not_stun\"}", "counter", "STUN datagrams by what became of them (derper's dispositions)") \
  X(stun_read_error, "stun_requests{disposition=\"read_error\"}", "counter", "")     \
  X(stun_success, "stun_requests{disposition=\"success\"}", "counter", "")           \
  X(stun_write_error, "stun_requests{disposition=\"write_error\"}", "counter", "")   \
  X(stun_drop_short, "derpd_stun_dropped{reason=\"short\"}", "counter", "STUN datagrams not answered, by reason (derper: not_stun; replies_in_flight: write_error)") \
  X(stun_drop_not_stun, "derpd_stun_dropped{reason=\"not_stun\"}", "counter", "")    \
  X(stun_drop_not_binding, "derpd_stun_dropped{reason=\"not_binding\"}", "counter", "") \
  X(stun_drop_bad_attrs, "derpd_stun_dropped{reason=\"bad_attrs\"}", "counter", "")  \
  X(stun_drop_software, "derpd_stun_dropped{reason=\"software\"}", "counter", "")    \
  X(stun_drop_no_fingerprint, "derpd_stun_dropped{reason=\"no_fingerprint\"}", "counter", "") \
  X(stun_drop_bad_fingerprint, "derpd_stun_dropped{reason=\"bad_fingerprint\"}", "counter", "") \
  X(stun_drop_unknown_attr, "derpd_stun_dropped{reason=\"unknown_attr\"}", "counter", "") \
  X(stun_drop_oversized, "derpd_stun_dropped{reason=\"oversized\"}", "counter", "")  \
  X(stun_drop_busy, "derpd_stun_dropped{reason=\"replies_in_flight\"}", "counter", "")

/* derp_packets_dropped_reason{reason=...} */
#define STATS_DROPS(X)                 \
  X(unknown_dest, "unknown_dest")      \
  X(unknown_dest_on_fwd, "unknown_dest_on_fwd") \
  X(gone_disconnected, "gone_disconnected") \
  X(queue_head, "queue_head")          \
  X(queue_tail, "queue_tail")          \
  X(write_error, "write_error")        \
  X(dup_client, "dup_client")          \
  X(shard_queue, "shard_queue")        \
  X(mesh_queue, "mesh_queue")          \
  X(mesh_link_down, "mesh_link_down")

/* derpd_conn_closed{reason=...}: why connections ended. */
#define STATS_CLOSES(X)                                   \
  X(eof, "eof")                                           \
  X(read_error, "read_error")                             \
  X(write_error, "write_error")                           \
  X(write_timeout, "write_timeout")                       \
  X(handshake_timeout, "handshake_timeout")               \
  X(http_done, "http_done")                               \
  X(http_bad, "http_bad")                                 \
  X(bad_first_frame, "bad_first_frame")                   \
  X(bad_client_info, "bad_client_info")                   \
  X(admission, "admission_denied")                        \
  X(frame_length, "bad_frame_length")                     \
  X(not_mesh, "not_mesh")                                 \
  X(conn_limit, "conn_limit")                             \
  X(nomem, "out_of_memory")                               \
  X(shutdown, "shutdown")                                 \
  X(tls, "tls_error")                                     \
  X(tls_alert, "tls_alert")                               \
  X(frame_stall, "frame_stall")                           \
  X(rate_backlog, "rate_limit_backlog")                   \
  X(ktls_key_update, "ktls_key_update")                   \
  X(ktls, "ktls_error")                                   \
  X(websocket_protocol, "websocket_protocol")             \
  X(websocket_close, "websocket_close")                   \
  X(close_peer, "close_peer")                             \
  X(watchers_full, "watchers_full")                       \
  X(link_silent, "link_silent")                         \
  X(accept_limit, "accept_limit")

#define STAT_ENUM(name, ...) STAT_##name,
enum stat_scalar { STATS_SCALARS(STAT_ENUM) STAT_NSCALARS };
/* derper_tls_{request,active}_version's slot for a conn's tls_ver (2, 3). */
_Static_assert(STAT_tls_req13 == STAT_tls_req12 + 1 && STAT_tls_active13 == STAT_tls_active12 + 1,
               "TLS version counters out of order");
#define STAT_TLS_REQ(ver) (STAT_tls_req12 + ((ver) == 3))
#define STAT_TLS_ACTIVE(ver) (STAT_tls_active12 + ((ver) == 3))
#define DROP_ENUM(name, ...) DROP_##name,
enum drop_reason { STATS_DROPS(DROP_ENUM) DROP_NREASONS };
#define CLOSE_ENUM(name, ...) CLOSE_##name,
enum close_reason { CLOSE_none = 0, STATS_CLOSES(CLOSE_ENUM) CLOSE_NREASONS };

/* A dropped packet's kind, derper's: payload that looks like disco or not. */
enum drop_kind { DROP_KIND_OTHER, DROP_KIND_DISCO, DROP_NKINDS };

struct stats {
  _Atomic int64_t v[STAT_NSCALARS];
  /* derp_packets_dropped{reason,kind} and derp_bytes_dropped{reason,kind}
   * (payload bytes, as derper); each cell only rises. */
  _Atomic int64_t drops[DROP_NREASONS][DROP_NKINDS];
  _Atomic int64_t drop_bytes[DROP_NREASONS][DROP_NKINDS];
  _Atomic int64_t closes[CLOSE_NREASONS];
  struct stats_ops ops;   /* histograms and averages (stats_hist.h) */
};

/* Single-writer updates: only the owning shard thread calls these. */
static inline void stat_add_slot(_Atomic int64_t *x, int64_t d) {
  atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + d, memory_order_relaxed);
}
#define STAT_ADD(st, name, d) stat_add_slot(&(st)->v[STAT_##name], (d))
#define STAT_INC(st, name) STAT_ADD(st, name, 1)
/* n packets of `bytes` payload bytes in all, disco or not, dropped for reason
 * (server.h's STAT_DROP_PKT counts one struct pkt). */
#define STAT_DROP_N(st, reason, disco, n, bytes)                                  \
  (stat_add_slot(&(st)->drops[DROP_##reason][(disco) ? DROP_KIND_DISCO : DROP_KIND_OTHER], (n)), \
   stat_add_slot(&(st)->drop_bytes[DROP_##reason][(disco) ? DROP_KIND_DISCO : DROP_KIND_OTHER], (bytes)))
#define STAT_CLOSE(st, reason) stat_add_slot(&(st)->closes[(reason)], 1)

const char *close_reason_name(enum close_reason r);

/* A bounded text appender: once len reaches cap, output is dropped. */
struct out { char *p; size_t cap, len; };
void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Render the sum of nstats shards' counters (plus process facts) into out.
 * Returns bytes written (truncated at cap). */
size_t metrics_render_varz(char *out, size_t cap, struct stats *const *all, int nstats);
/* Packets of kind k dropped, every reason, summed over nstats shards. */
int64_t metrics_dropped_kind(struct stats *const *all, int nstats, enum drop_kind k);

#endif
