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
    s
}
