//! The sections added for the connection-engine work (issue 11): connect storm, idle
//! connections at 5,000 and 15,000 held from several client processes, a 10,000-member fan-out
//! split over client processes, and permessage-deflate on a rooms route.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use crate::auth::Signer;
use crate::fanout::{payload, publish_frame};
use crate::helpers::{Kv, dialect_name, next_source, now_ns};
use crate::procs::{Helper, PeakRss, nofile_limit};
use crate::servers::{self, Env, RoomsExtras, Server};
use crate::stats::{median, r1, r3};
use crate::wsclient::{Dialect, sio_path};
use crate::{Params, agg};

/// Per-target metric across the runs of a section.
fn field(runs: &[Value], target: &str, key: &str) -> Vec<f64> {
    runs.iter()
        .filter(|r| r["target"] == target)
        .filter_map(|r| r[key].as_f64())
        .collect()
}

/// Median over repetitions of a / b, paired by repetition.
fn paired_ratio(runs: &[Value], a: &str, b: &str, key: &str) -> f64 {
    let (x, y) = (field(runs, a, key), field(runs, b, key));
    r3(median(
        &x.iter().zip(&y).map(|(x, y)| x / y).collect::<Vec<_>>(),
    ))
}

fn write_tokens(env: &Env, name: &str, tokens: &[String]) -> Result<String> {
    let path = env.work_dir.join(format!("{name}.tokens"));
    std::fs::write(&path, tokens.join("\n"))?;
    Ok(path.display().to_string())
}

// --- connect storm -------------------------------------------------------------------------

/// (name, server, path, dialect, tokens to present).
type StormTarget<'a> = (
    &'static str,
    &'a Server,
    &'a str,
    Dialect,
    Option<Arc<Vec<String>>>,
);

pub async fn storm_section(env: &Env, p: &Params, signer: &Signer) -> Result<Value> {
    println!(
        "== connect storm: {} connects, {} in flight",
        p.storm_n, p.storm_inflight
    );
    let tokens = Arc::new(signer.tokens_from(0, p.storm_n)?);
    // Other users for the warm storm: tokens the gateway has not verified (nor cached) yet.
    let warm_tokens = Arc::new(signer.tokens_from(p.storm_n, p.storm_n)?);
    let mut runs = Vec::new();
    for rep in 0..p.reps {
        // Every server is a fresh process per repetition, as after a pod restart: its first
        // storm is the cold one (the gateway meets every token for the first time, Node's JIT
        // and heap start empty). Each then takes a second storm of new clients, warm.
        let gw = servers::gateway_rooms_with(
            env,
            &format!("storm-gateway-{rep}"),
            None,
            &RoomsExtras {
                jwt_pem: Some(&signer.public_pem),
                compression: false,
            },
        )?;
        let wsr = servers::node_peer(env, &format!("storm-node-ws-{rep}"), "echo.js")?;
        let sio = servers::node_peer(env, &format!("storm-socketio-{rep}"), "sio-room.js")?;
        if rep == 0 {
            auth_preflight(gw.port, &tokens[0]).await?;
        }
        let sio_member = sio_path("member");
        let jwt = || Some(tokens.clone());
        // Each server's cold storm, then each one's warm storm (its second), then the
        // gateway's reconnect and no-auth references: the warm storms compare like with like.
        let targets: [StormTarget; 8] = [
            ("gateway-jwt", &gw, "/auth", Dialect::Switchboard, jwt()),
            ("node-ws", &wsr, "/", Dialect::Plain, None),
            ("socket.io", &sio, &sio_member, Dialect::SocketIo, None),
            (
                "gateway-jwt-warm",
                &gw,
                "/auth",
                Dialect::Switchboard,
                Some(warm_tokens.clone()),
            ),
            ("node-ws-warm", &wsr, "/", Dialect::Plain, None),
            ("socket.io-warm", &sio, &sio_member, Dialect::SocketIo, None),
            (
                "gateway-jwt-reconnect",
                &gw,
                "/auth",
                Dialect::Switchboard,
                jwt(),
            ),
            ("gateway-noauth", &gw, "/rooms", Dialect::Switchboard, None),
        ];
        for (name, srv, path, dialect, toks) in targets {
            let cpu = || srv.proc.cpu_seconds();
            let s = crate::storm::run(
                srv.port,
                path,
                dialect,
                toks,
                p.storm_n,
                p.storm_inflight,
                &cpu,
            )
            .await?;
            let us = s.server_cpu_s * 1e6 / s.ok.max(1) as f64;
            println!(
                "  storm rep {rep} {name:22} {:8.0} connects/s  {}/{} ok  server cpu {:6.1} us/connect  handshake p50 {:7.0} us p99 {:7.0} us{}",
                s.per_second,
                s.ok,
                s.ok + s.failed,
                us,
                s.p50_us,
                s.p99_us,
                s.first_error
                    .as_deref()
                    .map_or(String::new(), |e| format!("  first error: {e}"))
            );
            runs.push(
                json!({"rep": rep, "target": name, "connects_per_s": r1(s.per_second),
                "ok": s.ok, "failed": s.failed, "seconds": r3(s.seconds),
                "server_cpu_us_per_connect": r1(us), "handshake_p50_us": r1(s.p50_us),
                "handshake_p99_us": r1(s.p99_us), "first_error": s.first_error}),
            );
            // Let sockets in TIME_WAIT and the servers' close work settle between storms.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        gw.stop();
        wsr.stop();
        sio.stop();
    }
    let mut per = serde_json::Map::new();
    for name in STORM_TARGETS {
        let failed: u64 = runs
            .iter()
            .filter(|r| r["target"] == name)
            .filter_map(|r| r["failed"].as_u64())
            .sum();
        per.insert(
            name.into(),
            json!({"connects_per_s": agg(&field(&runs, name, "connects_per_s")),
                   "server_cpu_us_per_connect": agg(&field(&runs, name, "server_cpu_us_per_connect")),
                   "handshake_p50_us": agg(&field(&runs, name, "handshake_p50_us")),
                   "handshake_p99_us": agg(&field(&runs, name, "handshake_p99_us")),
                   "failed_total": failed}),
        );
    }
    let k = "connects_per_s";
    let cpu = "server_cpu_us_per_connect";
    Ok(json!({
        "connects": p.storm_n, "inflight": p.storm_inflight,
        "targets": Value::Object(per),
        "ratios": {
            "gateway_jwt_over_socketio": paired_ratio(&runs, "gateway-jwt", "socket.io", k),
            "gateway_jwt_over_node_ws": paired_ratio(&runs, "gateway-jwt", "node-ws", k),
            "warm_gateway_jwt_over_socketio": paired_ratio(&runs, "gateway-jwt-warm", "socket.io-warm", k),
            "warm_gateway_jwt_over_node_ws": paired_ratio(&runs, "gateway-jwt-warm", "node-ws-warm", k),
            "gateway_reconnect_over_socketio": paired_ratio(&runs, "gateway-jwt-reconnect", "socket.io-warm", k),
            "gateway_reconnect_over_node_ws": paired_ratio(&runs, "gateway-jwt-reconnect", "node-ws-warm", k),
            "cpu_gateway_jwt_over_node_ws": paired_ratio(&runs, "gateway-jwt", "node-ws", cpu),
            "cpu_warm_gateway_jwt_over_node_ws": paired_ratio(&runs, "gateway-jwt-warm", "node-ws-warm", cpu),
        },
        "runs": runs,
    }))
}

/// The storm's targets, in the order the report lists them.
pub const STORM_TARGETS: [&str; 8] = [
    "gateway-jwt",
    "node-ws",
    "socket.io",
    "gateway-jwt-warm",
    "node-ws-warm",
    "socket.io-warm",
    "gateway-jwt-reconnect",
    "gateway-noauth",
];

/// The `/auth` route really checks: no token, a foreign `Origin` and a token signed by another
/// key are refused, and the run's token with the allowed `Origin` is accepted (else the storm
/// would measure an open route).
async fn auth_preflight(port: u16, token: &str) -> Result<()> {
    let with = |token: Option<&str>, origin: &str| crate::wsclient::Extra {
        src: None,
        headers: token
            .map(|t| ("Authorization", format!("Bearer {t}")))
            .into_iter()
            .chain([("Origin", origin.to_string())])
            .collect(),
    };
    let other_key = Signer::generate()?.token("u0")?;
    for (what, extra) in [
        ("no token", with(None, crate::auth::ORIGIN)),
        (
            "a foreign Origin",
            with(Some(token), "https://evil.example"),
        ),
        (
            "a token of another key",
            with(Some(&other_key), crate::auth::ORIGIN),
        ),
    ] {
        if crate::wsclient::connect_with(port, "/auth", Dialect::Switchboard, &extra)
            .await
            .is_ok()
        {
            bail!("the gateway's /auth route accepted a connect with {what}");
        }
    }
    let mut ok = crate::wsclient::connect_with(
        port,
        "/auth",
        Dialect::Switchboard,
        &with(Some(token), crate::auth::ORIGIN),
    )
    .await
    .context("the gateway's /auth route refused a valid token")?;
    let _ = ok.close(None).await;
    Ok(())
}

// --- idle connections from several processes -----------------------------------------------

/// How to reach one idle-memory target.
struct IdleKind {
    name: &'static str,
    path: String,
    dialect: Dialect,
    /// `join=` for the helpers (`user`, `room:<name>`), if any.
    join: Option<&'static str>,
    /// Tokens (per-user rooms).
    auth: bool,
    /// Server-side descriptors per client connection (proxies hold two).
    fds_per_conn: u64,
}

fn start_idle(env: &Env, kind: &str, name: &str, signer: &Signer) -> Result<Server> {
    match kind {
        "gateway-rooms-user" => servers::gateway_rooms_with(
            env,
            name,
            None,
            &RoomsExtras {
                jwt_pem: Some(&signer.public_pem),
                compression: false,
            },
        ),
        "gateway-rooms-shared" => servers::gateway_rooms(env, name, None),
        "gateway-proxy" => servers::gateway_proxy(env, name),
        "node-ws" => servers::node_peer(env, name, "echo.js"),
        "nginx-proxy" => servers::nginx_proxy(env, name),
        "socket.io" => servers::node_peer(env, name, "sio-room.js"),
        other => bail!("unknown idle target {other}"),
    }
}

pub async fn idle_section(env: &Env, p: &Params, signer: &Signer) -> Result<Value> {
    let max_n = p.idle_counts.iter().copied().max().unwrap_or(0);
    println!(
        "== idle connections at {:?}, held by {} client processes",
        p.idle_counts, p.idle_helpers
    );
    let tokens = write_tokens(env, "idle", &signer.tokens(max_n)?)?;
    let kinds = [
        IdleKind {
            name: "gateway-rooms-user",
            path: "/auth".into(),
            dialect: Dialect::Switchboard,
            join: Some("user"),
            auth: true,
            fds_per_conn: 1,
        },
        IdleKind {
            name: "gateway-rooms-shared",
            path: "/rooms".into(),
            dialect: Dialect::Switchboard,
            join: Some("room:bench:shared"),
            auth: false,
            fds_per_conn: 1,
        },
        IdleKind {
            name: "gateway-proxy",
            path: "/echo".into(),
            dialect: Dialect::Plain,
            join: None,
            auth: false,
            fds_per_conn: 2,
        },
        IdleKind {
            name: "node-ws",
            path: "/".into(),
            dialect: Dialect::Plain,
            join: None,
            auth: false,
            fds_per_conn: 1,
        },
        IdleKind {
            name: "nginx-proxy",
            path: "/echo".into(),
            dialect: Dialect::Plain,
            join: None,
            auth: false,
            fds_per_conn: 2,
        },
        IdleKind {
            name: "socket.io",
            path: sio_path("member"),
            dialect: Dialect::SocketIo,
            join: None,
            auth: false,
            fds_per_conn: 1,
        },
    ];
    let fd_limit = nofile_limit();
    let mut runs = Vec::new();
    for rep in 0..p.idle_reps {
        for kind in &kinds {
            for &want in &p.idle_counts {
                // What the server's descriptor limit allows (the proxies need two per client).
                let feasible = ((fd_limit.saturating_sub(300)) / kind.fds_per_conn) as usize;
                let n = want.min(feasible);
                let srv = start_idle(
                    env,
                    kind.name,
                    &format!("idle-{}-{want}-{rep}", kind.name),
                    signer,
                )?;
                tokio::time::sleep(Duration::from_millis(700)).await;
                let (rss0, pss0) = (srv.proc.rss_kib(), srv.proc.pss_kib());
                let mut helpers = Vec::new();
                let per = n.div_ceil(p.idle_helpers);
                let mut from = 0;
                for k in 0..p.idle_helpers {
                    let count = per.min(n - from);
                    if count == 0 {
                        break;
                    }
                    let mut args = vec![
                        "hold".to_string(),
                        format!("port={}", srv.port),
                        format!("path={}", kind.path),
                        format!("dialect={}", dialect_name(kind.dialect)),
                        format!("src={}", next_source()),
                        format!("n={count}"),
                        format!("from={from}"),
                    ];
                    if let Some(j) = kind.join {
                        args.push(format!("join={j}"));
                    }
                    if kind.auth {
                        args.push(format!("tokens={tokens}"));
                    }
                    let log = env
                        .work_dir
                        .join(format!("idle-{}-{want}-{rep}-hold{k}.log", kind.name));
                    helpers.push(Helper::spawn(&format!("hold{k}"), &args, &log)?);
                    from += count;
                }
                for h in &mut helpers {
                    let line = h.recv_async()?;
                    if !line.starts_with("ready") {
                        bail!("idle helper: {line}");
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                let (rss1, pss1) = (srv.proc.rss_kib(), srv.proc.pss_kib());
                let (mut alive, mut dead) = (0u64, 0u64);
                for h in &mut helpers {
                    h.send("probe")?;
                }
                for h in &mut helpers {
                    let line = h.recv_async()?;
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if let ["alive", a, "dead", d] = f.as_slice() {
                        alive += a.parse::<u64>()?;
                        dead += d.parse::<u64>()?;
                    } else {
                        bail!("idle helper: {line}");
                    }
                }
                for h in &mut helpers {
                    let _ = h.send("close");
                }
                for mut h in helpers {
                    tokio::task::block_in_place(|| {
                        let deadline = std::time::Instant::now() + Duration::from_secs(10);
                        while h.proc.alive() && std::time::Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        h.proc.stop();
                    });
                }
                let kb = |a: u64, b: u64| (b as f64 - a as f64) / n.max(1) as f64 * 1.024;
                println!(
                    "  idle rep {rep} {:21} {n:6} conns  rss {:7.1} -> {:7.1} MiB ({:5.2} kB/conn)  pss {:7.1} -> {:7.1} MiB ({:5.2} kB/conn)  alive {alive}/{}",
                    kind.name,
                    rss0 as f64 / 1024.0,
                    rss1 as f64 / 1024.0,
                    kb(rss0, rss1),
                    pss0 as f64 / 1024.0,
                    pss1 as f64 / 1024.0,
                    kb(pss0, pss1),
                    alive + dead
                );
                runs.push(
                    json!({"rep": rep, "target": kind.name, "wanted": want, "connections": n,
                    "capped_by_fd_limit": n < want, "rss0_kib": rss0, "rss1_kib": rss1,
                    "pss0_kib": pss0, "pss1_kib": pss1,
                    "rss_kb_per_conn": r3(kb(rss0, rss1)), "pss_kb_per_conn": r3(kb(pss0, pss1)),
                    "alive": alive, "dead": dead}),
                );
                srv.stop();
            }
        }
    }
    // Aggregates per target and count, and the growth between the smallest and largest count.
    let mut per = serde_json::Map::new();
    for kind in &kinds {
        let mut counts = serde_json::Map::new();
        for &want in &p.idle_counts {
            let rs: Vec<&Value> = runs
                .iter()
                .filter(|r| r["target"] == kind.name && r["wanted"] == want)
                .collect();
            let vals = |k: &str| rs.iter().filter_map(|r| r[k].as_f64()).collect::<Vec<_>>();
            let mib = |k: &str| {
                rs.iter()
                    .filter_map(|r| r[k].as_f64())
                    .map(|v| v / 1024.0)
                    .collect::<Vec<_>>()
            };
            let last = rs.last();
            counts.insert(
                want.to_string(),
                json!({"connections": last.map(|r| r["connections"].clone()),
                       "capped_by_fd_limit": last.map(|r| r["capped_by_fd_limit"].clone()),
                       "rss_kb_per_conn": agg(&vals("rss_kb_per_conn")),
                       "pss_kb_per_conn": agg(&vals("pss_kb_per_conn")),
                       "rss0_mib": agg(&mib("rss0_kib")), "rss1_mib": agg(&mib("rss1_kib")),
                       "pss1_mib": agg(&mib("pss1_kib")),
                       "alive": last.map(|r| r["alive"].clone()), "dead": last.map(|r| r["dead"].clone())}),
            );
        }
        // Growth: marginal kB per connection between the two counts (RSS), beside the average
        // at the smaller count; linear growth gives a ratio near 1 (or below: fixed costs).
        let (lo, hi) = (
            p.idle_counts.first().copied().unwrap_or(0),
            p.idle_counts.last().copied().unwrap_or(0),
        );
        let pick = |want: usize, k: &str| -> Option<(f64, f64)> {
            let r = runs
                .iter()
                .rfind(|r| r["target"] == kind.name && r["wanted"] == want)?;
            Some((r["connections"].as_f64()?, r[k].as_f64()?))
        };
        let growth = match (
            pick(lo, "rss1_kib"),
            pick(hi, "rss1_kib"),
            pick(lo, "rss_kb_per_conn"),
        ) {
            (Some((n0, m0)), Some((n1, m1)), Some((_, avg0))) if n1 > n0 => {
                let marginal = (m1 - m0) / (n1 - n0) * 1.024;
                json!({"from": n0, "to": n1, "marginal_kb_per_conn": r3(marginal),
                       "marginal_over_average": r3(marginal / avg0)})
            }
            _ => Value::Null,
        };
        per.insert(
            kind.name.into(),
            json!({"counts": Value::Object(counts), "growth": growth}),
        );
    }
    Ok(
        json!({"counts": p.idle_counts, "helpers": p.idle_helpers, "fd_limit": fd_limit,
        "reps": p.idle_reps, "targets": Value::Object(per), "runs": runs}),
    )
}

// --- 10,000-member fan-out over client processes -------------------------------------------

pub async fn fanout10k_section(env: &Env, p: &Params) -> Result<Value> {
    println!(
        "== fan-out over {} client processes: {} members, {} x {}-byte messages",
        p.fan10k_helpers, p.fan10k_members, p.fan10k_messages, p.fan_size
    );
    let gw = servers::gateway_rooms(env, "fan10k-gateway", None)?;
    let wsr = servers::node_peer(env, "fan10k-ws-room", "ws-room.js")?;
    let sio = servers::node_peer(env, "fan10k-socketio", "sio-room.js")?;
    let t =
        |port, dialect, member: &str, publisher: &str, room: Option<&str>| crate::fanout::Target {
            port,
            dialect,
            member_path: member.into(),
            publisher_path: publisher.into(),
            room: room.map(str::to_string),
        };
    let targets: Vec<(&str, &Server, crate::fanout::Target)> = vec![
        (
            "gateway-json",
            &gw,
            t(
                gw.port,
                Dialect::Switchboard,
                "/rooms",
                "/rooms",
                Some("bench:fan10k"),
            ),
        ),
        (
            "gateway-raw",
            &gw,
            t(gw.port, Dialect::Plain, "/raw/fan10k", "/raw/fan10k", None),
        ),
        (
            "node-ws",
            &wsr,
            t(
                wsr.port,
                Dialect::Plain,
                "/?role=member",
                "/?role=pub",
                None,
            ),
        ),
        (
            "socket.io",
            &sio,
            t(
                sio.port,
                Dialect::SocketIo,
                &sio_path("member"),
                &sio_path("pub"),
                None,
            ),
        ),
    ];
    let mut runs = Vec::new();
    for rep in 0..p.fan10k_reps {
        for (name, srv, target) in &targets {
            let r = fan_multi(env, p, name, srv, target, rep).await?;
            println!(
                "  fan-out 10k rep {rep} {name:13} {:10.0} deliveries/s  {}/{} delivered in {:.2} s  server cpu {:.2} us/delivery  peak rss {:.0} MiB",
                num(&r["deliveries_per_s"]),
                r["deliveries"],
                r["expected"],
                num(&r["seconds"]),
                num(&r["server_cpu_us_per_delivery"]),
                num(&r["server_rss_peak_kib"]) / 1024.0
            );
            runs.push(r);
        }
    }
    let names: Vec<&'static str> = targets.iter().map(|t| t.0).collect();
    drop(targets);
    gw.stop();
    wsr.stop();
    sio.stop();
    let mut per = serde_json::Map::new();
    for name in &names {
        let undelivered: u64 = runs
            .iter()
            .filter(|r| r["target"] == *name)
            .map(|r| r["expected"].as_u64().unwrap_or(0) - r["deliveries"].as_u64().unwrap_or(0))
            .sum();
        per.insert(
            name.to_string(),
            json!({"deliveries_per_s": agg(&field(&runs, name, "deliveries_per_s")),
                   "server_cpu_us_per_delivery": agg(&field(&runs, name, "server_cpu_us_per_delivery")),
                   "client_cpu_us_per_delivery": agg(&field(&runs, name, "client_cpu_us_per_delivery")),
                   "server_rss_peak_mib": agg(&field(&runs, name, "server_rss_peak_kib").iter().map(|k| k / 1024.0).collect::<Vec<_>>()),
                   "server_rss_before_mib": agg(&field(&runs, name, "server_rss_before_kib").iter().map(|k| k / 1024.0).collect::<Vec<_>>()),
                   "server_rss_growth_mib": agg(&runs.iter().filter(|r| r["target"] == *name).map(|r| (r["server_rss_peak_kib"].as_f64().unwrap_or(0.0) - r["server_rss_before_kib"].as_f64().unwrap_or(0.0)) / 1024.0).collect::<Vec<_>>()),
                   "undelivered": undelivered}),
        );
    }
    let k = "deliveries_per_s";
    Ok(json!({
        "members": p.fan10k_members, "messages": p.fan10k_messages, "payload_bytes": p.fan_size,
        "helpers": p.fan10k_helpers, "reps": p.fan10k_reps,
        "targets": Value::Object(per),
        "ratios": {
            "gateway_json_over_node_ws": paired_ratio(&runs, "gateway-json", "node-ws", k),
            "gateway_json_over_socketio": paired_ratio(&runs, "gateway-json", "socket.io", k),
            "gateway_raw_over_node_ws": paired_ratio(&runs, "gateway-raw", "node-ws", k),
            "gateway_raw_over_socketio": paired_ratio(&runs, "gateway-raw", "socket.io", k),
            // CPU per delivery the other way round (higher: the gateway spends less), which the
            // load generator's own receive cost does not cap.
            "cpu_node_ws_over_gateway_json": paired_ratio(&runs, "node-ws", "gateway-json", "server_cpu_us_per_delivery"),
            "cpu_socketio_over_gateway_json": paired_ratio(&runs, "socket.io", "gateway-json", "server_cpu_us_per_delivery"),
        },
        "runs": runs,
    }))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// One burst into a room whose members are held by helper processes.
async fn fan_multi(
    env: &Env,
    p: &Params,
    name: &str,
    srv: &Server,
    t: &crate::fanout::Target,
    rep: usize,
) -> Result<Value> {
    let mut helpers = Vec::new();
    let per = p.fan10k_members.div_ceil(p.fan10k_helpers);
    let mut placed = 0;
    for k in 0..p.fan10k_helpers {
        let count = per.min(p.fan10k_members - placed);
        if count == 0 {
            break;
        }
        let mut args = vec![
            "members".to_string(),
            format!("port={}", t.port),
            format!("path={}", t.member_path),
            format!("dialect={}", dialect_name(t.dialect)),
            format!("src={}", next_source()),
            format!("n={count}"),
            format!("messages={}", p.fan10k_messages),
            "timeout=120".to_string(),
        ];
        if let Some(room) = &t.room {
            args.push(format!("join=room:{room}"));
        }
        let log = env
            .work_dir
            .join(format!("fan10k-{name}-{rep}-members{k}.log"));
        helpers.push(Helper::spawn(&format!("members{k}"), &args, &log)?);
        placed += count;
    }
    for h in &mut helpers {
        let line = h.recv_async()?;
        if !line.starts_with("ready") {
            bail!("fan-out helper: {line}");
        }
    }
    let publisher = crate::wsclient::connect(t.port, &t.publisher_path, t.dialect).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut sink, mut stream) = publisher.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let frames: Vec<_> = (0..p.fan10k_messages)
        .map(|i| publish_frame(t, &payload(i, p.fan_size)))
        .collect();
    for h in &mut helpers {
        h.send("go")?;
    }
    // RSS with every member connected, then the peak while the burst is delivered (a sampler
    // thread beside the publisher): the growth is what the burst itself costs.
    let rss_before = crate::procs::tree_rss_kib(srv.proc.pid());
    let sampler = PeakRss::start(srv.proc.pid());
    let helper_cpu = |hs: &[Helper]| hs.iter().map(|h| h.proc.cpu_seconds()).sum::<f64>();
    let client0 = helper_cpu(&helpers);
    let cpu0 = srv.proc.cpu_seconds();
    let start = now_ns();
    for f in frames {
        sink.feed(f).await?;
    }
    sink.flush().await?;
    let mut results = Vec::new();
    for h in &mut helpers {
        loop {
            let line = h.recv_async()?;
            if line.starts_with("done") {
                results.push(line);
                break;
            }
        }
    }
    let cpu_s = srv.proc.cpu_seconds() - cpu0;
    let client_s = helper_cpu(&helpers) - client0;
    let peak = sampler.finish();
    let (mut got, mut last, mut size) = (0u64, 0u64, 0u64);
    for line in &results {
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if let [g, _first, l, s] = f.as_slice() {
            got += g;
            last = last.max(*l);
            size = size.max(*s);
        }
    }
    for h in &mut helpers {
        let _ = h.send("close");
    }
    let _ = sink.close().await;
    drain.abort();
    for mut h in helpers {
        tokio::task::block_in_place(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while h.proc.alive() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            h.proc.stop();
        });
    }
    let seconds = (last.saturating_sub(start)) as f64 / 1e9;
    let expected = p.fan10k_members as u64 * p.fan10k_messages;
    Ok(
        json!({"rep": rep, "target": name, "deliveries": got, "expected": expected,
        "seconds": r3(seconds), "deliveries_per_s": r1(got as f64 / seconds.max(1e-9)),
        "server_cpu_s": r3(cpu_s), "server_cpu_us_per_delivery": r3(cpu_s * 1e6 / got.max(1) as f64),
        "delivery_bytes": size, "server_rss_peak_kib": peak, "server_rss_before_kib": rss_before,
        "client_cpu_us_per_delivery": r3(client_s * 1e6 / got.max(1) as f64)}),
    )
}

// --- permessage-deflate ---------------------------------------------------------------------

/// The paced compression runs: one publish every this many milliseconds.
const COMP_PACE_MS: u64 = 20;

pub async fn compression_section(env: &Env, p: &Params) -> Result<Value> {
    println!(
        "== compression: {} members, {} JSON chat messages of ~1-2 KiB",
        p.comp_members, p.comp_messages
    );
    // The route-level `compression` field may not exist in this gateway yet: then the section
    // measures the gateway without compression and says so.
    let (gw, status) = match servers::gateway_rooms_with(
        env,
        "comp-gateway",
        None,
        &RoomsExtras {
            jwt_pem: None,
            compression: true,
        },
    ) {
        Ok(gw) => (gw, Value::from("ran")),
        Err(e) => {
            let reason = format!("{e:#}");
            println!(
                "  the gateway refused `compression: {}`: gateway without compression",
                servers::COMPRESSION
            );
            (
                servers::gateway_rooms(env, "comp-gateway-plain", None)?,
                json!({"gateway_without_compression": reason.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim()}),
            )
        }
    };
    // Burst: the publisher (uncompressed in both runs, see deflate-room.js) sends everything
    // at once. Paced: one message every COMP_PACE_MS, nothing queues: the cost of a delivery
    // with and without compression.
    let mut targets = vec![
        ("gateway-off", "/rooms", 0),
        ("gateway-off-paced", "/rooms", COMP_PACE_MS),
    ];
    if status == "ran" {
        targets.insert(0, ("gateway-deflate", "/comp", 0));
        targets.insert(2, ("gateway-deflate-paced", "/comp", COMP_PACE_MS));
    }
    let mut runs = Vec::new();
    for rep in 0..p.reps {
        for (name, path, pace) in &targets {
            let mut cmd = std::process::Command::new(&env.node);
            cmd.arg(env.peers_dir.join("deflate-room.js"))
                .arg(gw.port.to_string())
                .arg(path)
                .arg(format!("bench:comp{rep}"))
                .arg(p.comp_members.to_string())
                .arg(p.comp_messages.to_string())
                .arg(pace.to_string());
            let log = env.work_dir.join(format!("comp-{name}-{rep}.log"));
            let mut h = Helper::spawn_command(name, &mut cmd, &log)?;
            let ready = h.recv_async()?;
            let ext = ready
                .strip_prefix("ready ")
                .context("deflate client did not get ready")?
                .to_string();
            let cpu0 = gw.proc.cpu_seconds();
            h.send("go")?;
            let done = h.recv_async()?;
            let cpu_s = gw.proc.cpu_seconds() - cpu0;
            let d: Value = serde_json::from_str(
                done.strip_prefix("done ")
                    .with_context(|| format!("deflate client: {done}"))?,
            )?;
            let deliveries = d["deliveries"].as_f64().unwrap_or(0.0);
            let us = cpu_s * 1e6 / deliveries.max(1.0);
            let wire = d["wire_bytes"].as_f64().unwrap_or(0.0) / deliveries.max(1.0);
            println!(
                "  compression rep {rep} {name:16} {}/{} delivered  server cpu {us:6.2} us/delivery  wire {wire:7.1} B/delivery (inflated {})  extensions: {ext}",
                d["deliveries"], d["expected"], d["inflated_bytes"]
            );
            runs.push(
                json!({"rep": rep, "target": name, "deliveries": d["deliveries"],
                "expected": d["expected"], "server_cpu_s": r3(cpu_s),
                "server_cpu_us_per_delivery": r3(us), "wire_bytes_per_delivery": r1(wire),
                "inflated_bytes": d["inflated_bytes"], "published_bytes": d["published_bytes"],
                "seconds": d["seconds"], "extensions": ext}),
            );
            tokio::task::block_in_place(|| {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while h.proc.alive() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                h.proc.stop();
            });
        }
    }
    gw.stop();
    let mut per = serde_json::Map::new();
    for (name, _, _) in &targets {
        let last = runs.iter().rfind(|r| r["target"] == *name);
        per.insert(
            name.to_string(),
            json!({"server_cpu_us_per_delivery": agg(&field(&runs, name, "server_cpu_us_per_delivery")),
                   "wire_bytes_per_delivery": agg(&field(&runs, name, "wire_bytes_per_delivery")),
                   "inflated_bytes": last.map(|r| r["inflated_bytes"].clone()),
                   "extensions": last.map(|r| r["extensions"].clone())}),
        );
    }
    let ratios = if status == "ran" {
        json!({
            "cpu_deflate_over_off": paired_ratio(&runs, "gateway-deflate", "gateway-off", "server_cpu_us_per_delivery"),
            "wire_deflate_over_off": paired_ratio(&runs, "gateway-deflate", "gateway-off", "wire_bytes_per_delivery"),
            "cpu_deflate_over_off_paced": paired_ratio(&runs, "gateway-deflate-paced", "gateway-off-paced", "server_cpu_us_per_delivery"),
        })
    } else {
        Value::Null
    };
    Ok(json!({"status": status, "settings": servers::COMPRESSION,
        "members": p.comp_members, "messages": p.comp_messages,
        "targets": Value::Object(per), "ratios": ratios, "runs": runs}))
}

/// `sbbench hold|members|relay ...` (see [`crate::helpers`]); `None` when `argv` is not a
/// helper command.
pub async fn helper_main(argv: &[String]) -> Option<Result<()>> {
    let cmd = argv.get(1)?.as_str();
    if !matches!(cmd, "hold" | "members" | "relay") {
        return None;
    }
    let kv = match Kv::parse(&argv[2..]) {
        Ok(kv) => kv,
        Err(e) => return Some(Err(e)),
    };
    Some(match cmd {
        "hold" => crate::helpers::hold(&kv).await,
        "members" => crate::helpers::members(&kv).await,
        _ => match kv.get("nats") {
            Ok(url) => crate::relay::serve(url).await,
            Err(e) => Err(e),
        },
    })
}
