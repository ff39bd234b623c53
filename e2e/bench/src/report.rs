//! The results document as Markdown tables: medians over the repetitions, with the min-max
//! range beside them so the noise of a shared machine is visible.

use std::fmt::Write;

use serde_json::Value;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// `median (min-max)` of an aggregate, with `digits` decimals.
fn agg(v: &Value, digits: usize) -> String {
    if v.is_null() {
        return "n/a".into();
    }
    let (m, lo, hi) = (num(&v["median"]), num(&v["min"]), num(&v["max"]));
    if (hi - lo).abs() < f64::EPSILON {
        format!("{m:.digits$}")
    } else {
        format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
    }
}

fn med(v: &Value) -> f64 {
    num(&v["median"])
}

fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn agg_k(v: &Value) -> String {
    let (m, lo, hi) = (med(v), num(&v["min"]), num(&v["max"]));
    if (hi - lo).abs() < 0.5 {
        return thousands(m);
    }
    format!("{} ({}–{})", thousands(m), thousands(lo), thousands(hi))
}

pub fn markdown(doc: &Value) -> String {
    let mut s = String::new();
    let m = &doc["meta"];
    let p = &m["params"];
    let _ = writeln!(s, "# Switchboard benchmark results\n");
    let _ = writeln!(
        s,
        "Run {} on {} CPUs ({}), kernel {}; gateway `{}` at {}; node {}, ws {}, socket.io {}, {}; {} repetitions, medians shown with the (min–max) over repetitions. Elapsed {} s.\n",
        m["date_utc"].as_str().unwrap_or("?"),
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["gateway"].as_str().unwrap_or("?"),
        m["git_rev"].as_str().unwrap_or("?"),
        m["node"].as_str().unwrap_or("?"),
        m["ws"].as_str().unwrap_or("?"),
        m["socket.io"].as_str().unwrap_or("?"),
        m["nginx"].as_str().unwrap_or("?"),
        p["reps"],
        doc["elapsed_s"],
    );
    let _ = writeln!(
        s,
        "Machine noise: CPU busy {}% (load {}) just before the run, {}% (load {}) just after. The load generator, the servers and other people's builds share the same cores: read ratios, not absolute numbers.\n",
        doc["noise_before"]["cpu_busy_pct"],
        doc["noise_before"]["loadavg"].as_str().unwrap_or("?"),
        doc["noise_after"]["cpu_busy_pct"],
        doc["noise_after"]["loadavg"].as_str().unwrap_or("?"),
    );

    let l = &doc["latency"];
    if !l.is_null() {
        let _ = writeln!(
            s,
            "## 1. Proxy mode: added round-trip latency\n\n{} sequential request/response round trips of a {}-byte text message per path, one connection per path (after {} warm-up), to one Node `ws` echo app: direct, through `switchboard-gateway` (proxy route), through nginx (WebSocket reverse proxy). The three paths take turns in chunks of 250 round trips so background load hits them alike. Added = path − direct, per repetition.\n",
            p["latency_n"], p["latency_payload_bytes"], p["latency_warmup"]
        );
        let _ = writeln!(
            s,
            "| path | p50 µs | p99 µs | added p50 µs | added p99 µs |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for t in ["direct", "gateway", "nginx"] {
            let (a50, a99) = if t == "direct" {
                ("–".to_string(), "–".to_string())
            } else {
                (
                    agg(&l["added"][t]["p50_us"], 1),
                    agg(&l["added"][t]["p99_us"], 1),
                )
            };
            let _ = writeln!(
                s,
                "| {t} | {} | {} | {a50} | {a99} |",
                agg(&l["targets"][t]["p50_us"], 1),
                agg(&l["targets"][t]["p99_us"], 1)
            );
        }
        let _ = writeln!(
            s,
            "\nAdded latency, gateway ÷ nginx (ratio of the medians): **p50 {} ×, p99 {} ×**. Whole round trip, gateway ÷ nginx: p50 {} ×, p99 {} ×. Added p99 values are differences of two noisy tails: read them as \"same order\" or \"not\".\n",
            l["added"]["ratio_gateway_over_nginx"]["p50"],
            l["added"]["ratio_gateway_over_nginx"]["p99"],
            l["round_trip_ratio_gateway_over_nginx"]["p50"],
            l["round_trip_ratio_gateway_over_nginx"]["p99"]
        );
    }

    let t = &doc["throughput"];
    if !t.is_null() {
        let _ = writeln!(
            s,
            "### Concurrent throughput\n\n{} connections per path, each with one {}-byte request in flight (closed loop); per repetition {} s measured per path, in {} slices that rotate between the paths (each slice after {} s warm-up). Proxy CPU = CPU time of the proxy process (nginx: master + workers) per round trip (≈).\n",
            p["throughput_connections"],
            p["latency_payload_bytes"],
            p["throughput_window_s"],
            p["throughput_slices"],
            p["throughput_warmup_s"]
        );
        let _ = writeln!(
            s,
            "| path | round trips/s | p50 µs | p99 µs | proxy CPU µs/round trip |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for name in ["direct", "gateway", "nginx"] {
            let x = &t["targets"][name];
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} |",
                agg_k(&x["round_trips_per_s"]),
                agg(&x["p50_us"], 0),
                agg(&x["p99_us"], 0),
                if name == "direct" {
                    "–".into()
                } else {
                    agg(&x["proxy_cpu_us_per_round_trip"], 1)
                }
            );
        }
        let _ = writeln!(
            s,
            "\nThroughput gateway ÷ nginx: **{} ×**; gateway ÷ direct: {} ×.\n",
            t["ratio_gateway_over_nginx"], t["ratio_gateway_over_direct"]
        );
    }

    let f = &doc["fanout"];
    if !f.is_null() {
        let _ = writeln!(
            s,
            "## 2. Rooms fan-out\n\nOne room of {} WebSocket members (one load-generator process), one publisher sending {} messages of {} bytes as fast as its connection takes them; deliveries/s = all deliveries counted at the members ÷ (last delivery − first publish). `gateway-json`: the room protocol (`switchboard.v1`; each delivery is a JSON `message` envelope around the payload); `gateway-proto`: the same room over the binary encoding (`switchboard.v1.proto`, one Protocol Buffers `ServerMessage` per delivery, payload bytes unescaped); `gateway-raw`: a raw relay room (the payload unchanged, like the Node `ws` room); Socket.IO adds its `42[\"m\",..]` framing. Gateway on the embedded bus, no history. Server CPU = CPU time of the server process ÷ deliveries.\n",
            p["fanout_members"], p["fanout_messages"], p["fanout_payload_bytes"]
        );
        let _ = writeln!(
            s,
            "| server | deliveries/s | server CPU µs/delivery | bytes/delivery | undelivered (all reps) |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for name in [
            "gateway-json",
            "gateway-proto",
            "gateway-raw",
            "node-ws",
            "socket.io",
        ] {
            let x = &f["targets"][name];
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} |",
                agg_k(&x["deliveries_per_s"]),
                agg(&x["server_cpu_us_per_delivery"], 2),
                x["delivery_bytes"],
                f["undelivered_total"][name]
            );
        }
        let r = &f["ratios"];
        let _ = writeln!(
            s,
            "\nBurst ratios (median of per-repetition ratios): gateway-json ÷ node-ws **{} ×**, gateway-json ÷ socket.io **{} ×**, gateway-raw ÷ node-ws **{} ×**, gateway-raw ÷ socket.io **{} ×**.\n",
            r["gateway_json_over_node_ws"],
            r["gateway_json_over_socketio"],
            r["gateway_raw_over_node_ws"],
            r["gateway_raw_over_socketio"]
        );
        let _ = writeln!(
            s,
            "Binary vs JSON encoding of the room protocol (same gateway, same room): gateway-proto ÷ gateway-json deliveries/s **{} ×**; bytes/delivery {} vs {}.\n",
            r["gateway_proto_over_json"],
            f["targets"]["gateway-proto"]["delivery_bytes"],
            f["targets"]["gateway-json"]["delivery_bytes"]
        );
        let pc = &f["paced"];
        if !pc.is_null() {
            let _ = writeln!(
                s,
                "Paced: the same room, the publisher sends {} messages one every {} ms ({} deliveries/s offered), so nothing queues and there is nothing to coalesce. Reach-all = publish → the last of the {} members has it.\n",
                pc["messages"],
                pc["interval_ms"],
                thousands(1000.0 / num(&pc["interval_ms"]) * num(&p["fanout_members"])),
                p["fanout_members"]
            );
            let _ = writeln!(
                s,
                "| server | server CPU µs/delivery | reach-all p50 µs | reach-all p99 µs | undelivered |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|");
            for name in [
                "gateway-json",
                "gateway-proto",
                "gateway-raw",
                "node-ws",
                "socket.io",
            ] {
                let x = &pc["targets"][name];
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {} | {} |",
                    agg(&x["server_cpu_us_per_delivery"], 2),
                    agg(&x["reach_all_p50_us"], 0),
                    agg(&x["reach_all_p99_us"], 0),
                    x["undelivered"]
                );
            }
            let _ = writeln!(s);
        }
    }

    let mm = &doc["memory"];
    if !mm.is_null() {
        let _ = writeln!(
            s,
            "## 3. Idle memory per connection\n\nRSS of the server process (nginx: master + workers) with 0 and with {} idle WebSocket connections, fresh process each time; kB/connection = ΔRSS ÷ connections. Proxies sit in front of a Node ws echo app whose memory is not counted. Every connection answered a probe afterwards (alive column).\n",
            mm["connections"]
        );
        let _ = writeln!(
            s,
            "| server | RSS idle MiB | RSS with connections MiB | kB/connection | alive (last rep) |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for name in [
            "gateway-proxy",
            "gateway-rooms",
            "node-ws",
            "nginx-proxy",
            "socket.io",
        ] {
            let x = &mm["targets"][name];
            let last = mm["runs"]
                .as_array()
                .and_then(|r| r.iter().rev().find(|r| r["target"] == name))
                .map(|r| format!("{}/{}", r["alive"], num(&r["alive"]) + num(&r["dead"])))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| {name} | {} | {} | **{}** | {last} |",
                agg(&x["rss0_mib"], 1),
                agg(&x["rss1_mib"], 1),
                agg(&x["kb_per_conn"], 1)
            );
        }
        let _ = writeln!(s);
    }

    let c = &doc["crosspod"];
    if !c.is_null() {
        let _ = writeln!(
            s,
            "## 4. Rooms publish → receive latency (cross-pod hop)\n\nOne publisher and one member of a room, one message in flight ({} measured), publish sent → `message` received, both clients in the load generator. `single-pod`: both clients on pod A; `cross-pod`: publisher on pod A, member on pod B, both pods on one local nats-server (`-js`). Plain rows: a route without history (live fan-out only: core NATS subjects); `-history` rows: a route with history (`maxMessages: 100`), so each publish is stored first (JetStream on NATS, in memory on the embedded bus).\n",
            p["hop_n"]
        );
        let _ = writeln!(s, "| setup | p50 µs | p99 µs |");
        let _ = writeln!(s, "|---|---:|---:|");
        for name in [
            "embedded-single-pod",
            "embedded-single-pod-history",
            "nats-single-pod",
            "nats-cross-pod",
            "nats-single-pod-history",
            "nats-cross-pod-history",
        ] {
            if c[name].is_null() {
                continue;
            }
            let _ = writeln!(
                s,
                "| {name} | {} | {} |",
                agg(&c[name]["p50_us"], 1),
                agg(&c[name]["p99_us"], 1)
            );
        }
        for name in ["relay-cross-pod", "nats-raw"] {
            if c[name].is_null() {
                continue;
            }
            let _ = writeln!(
                s,
                "| {name} | {} | {} |",
                agg(&c[name]["p50_us"], 1),
                agg(&c[name]["p99_us"], 1)
            );
        }
        let rr = &c["ratio_gateway_cross_pod_over_relay"];
        if !rr.is_null() {
            let _ = writeln!(
                s,
                "\n`relay-cross-pod`: the minimal WebSocket → NATS → WebSocket relay (`sbbench relay`, tokio-tungstenite + async-nats, two processes as two pods) on the same nats-server, publisher on one, member on the other; `nats-raw`: publish on one NATS connection, receive on another. Gateway cross-pod ÷ relay (median of per-repetition ratios): **p50 {} ×, p99 {} ×** (target ≤ 1.2×).",
                rr["p50"], rr["p99"]
            );
        }
        if c["nats"]["status"] == "skipped" {
            let _ = writeln!(
                s,
                "\nCross-pod over NATS: **not run** — {}. The harness runs it (nats-server + two gateway pods) as soon as the gateway starts with `bus: {{nats: ...}}`.",
                c["nats"]["reason"]
                    .as_str()
                    .unwrap_or("?")
                    .lines()
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
            );
        }
        let _ = writeln!(s);
    }
    storm(&mut s, doc);
    idle15k(&mut s, doc);
    fanout10k(&mut s, doc);
    compression(&mut s, doc);
    s
}

fn storm(s: &mut String, doc: &Value) {
    let x = &doc["storm"];
    if x.is_null() {
        return;
    }
    let _ = writeln!(
        s,
        "## 5. Connect storm\n\n{} WebSocket connects per storm, {} handshakes in flight, each held open until the storm is over; connects/s = connects ÷ (last handshake done − first started). Every server is a fresh process per repetition, as after a pod restart, and takes its first storm cold (`gateway-jwt`, `node-ws`, `socket.io`: the gateway meets every token for the first time, Node's JIT and heap start empty), then, right after, a second storm of other clients warm (`-warm`: the gateway with {} tokens of other users, not yet verified), every server's second. `gateway-jwt`: the rooms route `/auth` with an ES256 JWT (`Authorization: Bearer`, a different user and token per connect, key generated for the run, inline PEM in the config) and an `Origin` allow-list; `gateway-jwt-reconnect`: then the first storm's tokens again on the same process (a reconnect storm, the verified-token cache's case); `gateway-noauth`: the `/rooms` route without auth; Node `ws` and Socket.IO (full Socket.IO connect, `40` received) without auth. Server CPU = CPU time of the server process during the storm ÷ connects.\n",
        x["connects"], x["inflight"], x["connects"]
    );
    let _ = writeln!(
        s,
        "| server | connects/s | server CPU µs/connect | handshake p50 µs | handshake p99 µs | failed |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for name in crate::sections::STORM_TARGETS {
        let t = &x["targets"][name];
        if t.is_null() {
            continue;
        }
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            agg_k(&t["connects_per_s"]),
            agg(&t["server_cpu_us_per_connect"], 1),
            agg(&t["handshake_p50_us"], 0),
            agg(&t["handshake_p99_us"], 0),
            t["failed_total"]
        );
    }
    let r = &x["ratios"];
    let _ = writeln!(
        s,
        "\nConnects/s (median of per-repetition ratios), gateway with ES256 + Origin against the peers without auth (targets ≥ 2× Socket.IO, ≥ 1× Node `ws`):\n\n\
         | storm | ÷ socket.io | ÷ node-ws | server CPU per connect ÷ node-ws |\n|---|---:|---:|---:|\n\
         | cold (fresh processes, after a pod restart) | **{} ×** | **{} ×** | {} × |\n\
         | warm (second storm, new clients) | **{} ×** | **{} ×** | {} × |\n\
         | reconnect (cached tokens) ÷ warm peers | {} × | {} × | |\n",
        r["gateway_jwt_over_socketio"],
        r["gateway_jwt_over_node_ws"],
        r["cpu_gateway_jwt_over_node_ws"],
        r["warm_gateway_jwt_over_socketio"],
        r["warm_gateway_jwt_over_node_ws"],
        r["cpu_warm_gateway_jwt_over_node_ws"],
        r["gateway_reconnect_over_socketio"],
        r["gateway_reconnect_over_node_ws"],
    );
}

fn idle15k(s: &mut String, doc: &Value) {
    let x = &doc["idle15k"];
    if x.is_null() {
        return;
    }
    let counts: Vec<String> = x["counts"]
        .as_array()
        .map(|a| a.iter().map(|c| c.to_string()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "## 6. Idle connections at {} (several client processes)\n\nA fresh server per row; the connections are opened and held by {} load-generator processes, each from its own source address (127.0.0.2, .3, ...; a new one for every helper of the run), answering keep-alives; then each one must answer a probe (alive). RSS and PSS (`/proc/PID/smaps_rollup`) of the server process (nginx: master + workers; proxies sit in front of a Node `ws` echo app whose memory is not counted); kB/connection = Δ ÷ connections. `gateway-rooms-user`: JWT route, each connection joins its own `user:<sub>` room; `gateway-rooms-shared`: all in one room. Descriptor limit per process: {} (a proxy holds two per connection: rows marked * are capped to what fits). {} repetition(s).\n",
        counts.join(" and "),
        x["helpers"],
        x["fd_limit"],
        x["reps"]
    );
    let _ = writeln!(
        s,
        "| server | connections | RSS idle MiB | RSS loaded MiB | PSS loaded MiB | RSS kB/conn | PSS kB/conn | alive |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let names = [
        "gateway-rooms-user",
        "gateway-rooms-shared",
        "gateway-proxy",
        "node-ws",
        "nginx-proxy",
        "socket.io",
    ];
    for name in names {
        for c in &counts {
            let t = &x["targets"][name]["counts"][c.as_str()];
            if t.is_null() {
                continue;
            }
            let capped = if t["capped_by_fd_limit"] == true {
                "*"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "| {name} | {}{capped} | {} | {} | {} | **{}** | {} | {}/{} |",
                t["connections"],
                agg(&t["rss0_mib"], 1),
                agg(&t["rss1_mib"], 1),
                agg(&t["pss1_mib"], 1),
                agg(&t["rss_kb_per_conn"], 1),
                agg(&t["pss_kb_per_conn"], 1),
                t["alive"],
                num(&t["alive"]) + num(&t["dead"])
            );
        }
    }
    let _ = writeln!(
        s,
        "\nGrowth between the two counts (linearity): marginal RSS kB per added connection, and that ÷ the average kB/connection at the smaller count (≈ 1: linear; < 1: fixed costs amortised; > 1: a cliff).\n"
    );
    let _ = writeln!(
        s,
        "| server | from → to | marginal kB/conn | marginal ÷ average |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|");
    for name in names {
        let g = &x["targets"][name]["growth"];
        if g.is_null() {
            continue;
        }
        let _ = writeln!(
            s,
            "| {name} | {} → {} | {:.2} | {} |",
            thousands(num(&g["from"])),
            thousands(num(&g["to"])),
            num(&g["marginal_kb_per_conn"]),
            g["marginal_over_average"]
        );
    }
    let _ = writeln!(s);
}

fn fanout10k(s: &mut String, doc: &Value) {
    let x = &doc["fanout10k"];
    if x.is_null() {
        return;
    }
    let _ = writeln!(
        s,
        "## 7. Fan-out to {} members over {} client processes\n\nAs section 2's burst, with the members split over {} load-generator processes (own source addresses; deliveries time-stamped with the wall clock and compared with the publisher's start); one publisher sends {} messages of {} bytes. RSS before = the server's RSS with every member connected, before the burst; peak RSS = its largest RSS sampled while the burst is delivered; growth = peak − before (what the burst's queued deliveries cost: each message is held once, each member's queue holds a pointer to it); load generator CPU = CPU time of the member processes ÷ deliveries (when server + load generator CPU per delivery × deliveries/s nears 2 cores, the rate is the machine's, not the server's). {} repetition(s).\n",
        x["members"], x["helpers"], x["helpers"], x["messages"], x["payload_bytes"], x["reps"]
    );
    let _ = writeln!(
        s,
        "| server | deliveries/s | server CPU µs/delivery | load generator CPU µs/delivery | RSS before MiB | peak RSS MiB | burst growth MiB | undelivered |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for name in ["gateway-json", "gateway-raw", "node-ws", "socket.io"] {
        let t = &x["targets"][name];
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            agg_k(&t["deliveries_per_s"]),
            agg(&t["server_cpu_us_per_delivery"], 2),
            agg(&t["client_cpu_us_per_delivery"], 2),
            agg(&t["server_rss_before_mib"], 0),
            agg(&t["server_rss_peak_mib"], 0),
            agg(&t["server_rss_growth_mib"], 0),
            t["undelivered"]
        );
    }
    let r = &x["ratios"];
    let _ = writeln!(
        s,
        "\nDeliveries/s ratios (median of per-repetition ratios): gateway-json ÷ node-ws **{} ×** (target ≥ 7×), gateway-json ÷ socket.io **{} ×**, gateway-raw ÷ node-ws {} ×, gateway-raw ÷ socket.io {} ×. Server CPU per delivery, node-ws ÷ gateway-json {} ×, socket.io ÷ gateway-json {} ×. With 10,000 members the load generator's helpers (parsing every delivery) share the 2 cores with the server: when the gateway's rate is capped by them, the CPU ratio is the fairer comparison.\n",
        r["gateway_json_over_node_ws"],
        r["gateway_json_over_socketio"],
        r["gateway_raw_over_node_ws"],
        r["gateway_raw_over_socketio"],
        r["cpu_node_ws_over_gateway_json"],
        r["cpu_socketio_over_gateway_json"]
    );
}

fn compression(s: &mut String, doc: &Value) {
    let x = &doc["compression"];
    if x.is_null() {
        return;
    }
    let _ = writeln!(
        s,
        "## 8. permessage-deflate on a rooms route\n\n{} members of one room (Node `ws` clients offering `permessage-deflate; client_max_window_bits` like a browser, inflating what they receive), one publisher (without permessage-deflate, so in both runs its messages reach the gateway as fast as it sends them) sends {} JSON chat messages of ~1–2 KiB, in a burst and paced (`-paced`: one every 20 ms, so nothing queues at the gateway). `gateway-deflate`: the route with `compression: {}`; `gateway-off`: the same room settings without it, same gateway process. Wire bytes = bytes the members' sockets read (WebSocket frames, compressed or not) ÷ deliveries; server CPU = gateway CPU time ÷ deliveries.\n",
        x["members"],
        x["messages"],
        x["settings"].as_str().unwrap_or("?")
    );
    if let Some(reason) = x["status"]["gateway_without_compression"].as_str() {
        let _ = writeln!(
            s,
            "**Gateway without compression**: this gateway refused the route's `compression` field ({reason}), so only `gateway-off` ran.\n"
        );
    }
    let _ = writeln!(
        s,
        "| route | server CPU µs/delivery | wire bytes/delivery | message bytes (inflated, mean) | negotiated |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    for name in [
        "gateway-deflate",
        "gateway-off",
        "gateway-deflate-paced",
        "gateway-off-paced",
    ] {
        let t = &x["targets"][name];
        if t.is_null() {
            continue;
        }
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} |",
            agg(&t["server_cpu_us_per_delivery"], 2),
            agg(&t["wire_bytes_per_delivery"], 0),
            t["inflated_bytes"],
            t["extensions"].as_str().unwrap_or("")
        );
    }
    let ext = x["targets"]["gateway-deflate"]["extensions"].as_str();
    if ext.is_some_and(|e| !e.contains("permessage-deflate")) {
        let _ = writeln!(
            s,
            "\n**Note**: the gateway accepted the route's `compression` but did not negotiate permessage-deflate with the clients, so `gateway-deflate` ran uncompressed."
        );
    }
    let r = &x["ratios"];
    if !r.is_null() {
        let _ = writeln!(
            s,
            "\nServer CPU per delivery, deflate ÷ off (target ≤ 1.5×: compress once per message, not per member): paced **{} ×**, burst **{} ×**. Wire bytes deflate ÷ off: {} ×. (Until 2026-12-08 the publisher negotiated permessage-deflate too; Node compressed its publishes one after another while the same process inflated every member's deliveries, so the compressed \"burst\" reached the gateway spread out, one message at a time, and cost a write per delivery: 9.4× the uncompressed burst, which arrived at once.)",
            r["cpu_deflate_over_off_paced"], r["cpu_deflate_over_off"], r["wire_deflate_over_off"]
        );
    }
    let _ = writeln!(s);
}
