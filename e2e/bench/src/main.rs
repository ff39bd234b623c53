//! `sbbench`: the Switchboard benchmark harness. Runs the release gateway next to its peers
//! (nginx, Node `ws`, Socket.IO) in one job, on loopback, each comparison back-to-back and
//! repeated (`--reps`, default 3), and reports medians and ratios. Timings are never asserted:
//! this prints a table and writes `results/latest.md` and `results/latest.json`.
//!
//! Usually started by `e2e/bench/run.sh`, which installs the peers and builds everything:
//!
//! ```text
//! e2e/bench/run.sh                      # everything, ~12-15 minutes on 2 cores
//! e2e/bench/run.sh --only latency,fanout --reps 1
//! e2e/bench/run.sh --only storm,idle15k,fanout10k,compression
//! ```
//!
//! The same binary is also its own helper process (`sbbench hold|members|relay key=value...`,
//! see `helpers.rs`): the idle and 10,000-member sections spread their clients over several
//! processes and source addresses.
//!
//! ```text
//! ```

mod auth;
mod crosspod;
mod fanout;
mod helpers;
mod idle;
mod latency;
mod plots;
mod procs;
mod relay;
mod report;
mod sections;
mod servers;
mod stats;
mod storm;
mod wsclient;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::procs::{cpu_busy_sample, loadavg};
use crate::servers::{Env, Server};
use crate::stats::{median, r1, r3, range};
use crate::wsclient::{Dialect, sio_path};

/// Sizes of the runs (`--quick` shrinks them for a smoke test).
#[derive(Debug, Clone)]
pub struct Params {
    pub reps: usize,
    pub latency_n: usize,
    pub latency_warmup: usize,
    pub tput_conns: usize,
    pub tput_warmup: Duration,
    pub tput_window: Duration,
    pub tput_slices: usize,
    pub fan_members: usize,
    pub fan_messages: u64,
    pub fan_size: usize,
    pub fan_paced_messages: u64,
    pub fan_pace: Duration,
    pub idle_conns: usize,
    pub hop_n: usize,
    pub storm_n: usize,
    pub storm_inflight: usize,
    /// Idle connection counts of the multi-process idle section (5,000 and 15,000).
    pub idle_counts: Vec<usize>,
    pub idle_helpers: usize,
    pub idle_reps: usize,
    pub fan10k_members: usize,
    pub fan10k_messages: u64,
    pub fan10k_helpers: usize,
    pub fan10k_reps: usize,
    pub comp_members: usize,
    pub comp_messages: u64,
}

impl Params {
    fn full() -> Self {
        Self {
            reps: 3,
            latency_n: 5000,
            latency_warmup: 500,
            tput_conns: 200,
            tput_warmup: Duration::from_millis(300),
            tput_window: Duration::from_secs(3),
            tput_slices: 3,
            fan_members: 1000,
            fan_messages: 1000,
            fan_size: 64,
            fan_paced_messages: 60,
            fan_pace: Duration::from_millis(50),
            idle_conns: 5000,
            hop_n: 1000,
            storm_n: 5000,
            storm_inflight: 256,
            idle_counts: vec![5000, 15000],
            idle_helpers: 4,
            idle_reps: 1,
            fan10k_members: 10000,
            fan10k_messages: 100,
            fan10k_helpers: 4,
            fan10k_reps: 2,
            comp_members: 1000,
            comp_messages: 100,
        }
    }

    fn quick() -> Self {
        Self {
            reps: 1,
            latency_n: 500,
            latency_warmup: 50,
            tput_conns: 50,
            tput_warmup: Duration::from_millis(200),
            tput_window: Duration::from_secs(1),
            tput_slices: 2,
            fan_members: 100,
            fan_messages: 100,
            fan_size: 64,
            fan_paced_messages: 20,
            fan_pace: Duration::from_millis(20),
            idle_conns: 300,
            hop_n: 100,
            storm_n: 300,
            storm_inflight: 64,
            idle_counts: vec![200, 600],
            idle_helpers: 2,
            idle_reps: 1,
            fan10k_members: 400,
            fan10k_messages: 20,
            fan10k_helpers: 2,
            fan10k_reps: 1,
            comp_members: 50,
            comp_messages: 20,
        }
    }

    fn json(&self) -> Value {
        json!({
            "reps": self.reps, "latency_n": self.latency_n, "latency_warmup": self.latency_warmup,
            "latency_payload_bytes": latency::PAYLOAD.len(),
            "throughput_connections": self.tput_conns,
            "throughput_warmup_s": self.tput_warmup.as_secs_f64(),
            "throughput_window_s": self.tput_window.as_secs_f64(),
            "throughput_slices": self.tput_slices,
            "fanout_members": self.fan_members, "fanout_messages": self.fan_messages,
            "fanout_payload_bytes": self.fan_size,
            "fanout_paced_messages": self.fan_paced_messages,
            "fanout_paced_interval_ms": self.fan_pace.as_secs_f64() * 1e3, "idle_connections": self.idle_conns,
            "hop_n": self.hop_n,
            "storm_connects": self.storm_n, "storm_inflight": self.storm_inflight,
            "idle_counts": self.idle_counts, "idle_helpers": self.idle_helpers,
            "idle_reps": self.idle_reps,
            "fan10k_members": self.fan10k_members, "fan10k_messages": self.fan10k_messages,
            "fan10k_helpers": self.fan10k_helpers, "fan10k_reps": self.fan10k_reps,
            "compression_members": self.comp_members, "compression_messages": self.comp_messages,
        })
    }
}

const SECTIONS: [&str; 9] = [
    "latency",
    "throughput",
    "fanout",
    "memory",
    "crosspod",
    "storm",
    "idle15k",
    "fanout10k",
    "compression",
];

struct Args {
    env: Env,
    out: PathBuf,
    params: Params,
    only: Vec<String>,
    quick: bool,
    /// `docs/benchmarks.md`, rewritten (with its plots) after a complete full-size run.
    docs: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut gateway = None;
    let mut peers = None;
    let mut out = None;
    let mut only: Vec<String> = SECTIONS.iter().map(|s| s.to_string()).collect();
    let mut params = Params::full();
    let mut reps = None;
    let mut quick = false;
    let mut docs = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--gateway" => gateway = it.next(),
            "--peers" => peers = it.next(),
            "--out" => out = it.next(),
            "--docs" => docs = it.next().map(PathBuf::from),
            "--reps" => reps = Some(it.next().context("--reps N")?.parse()?),
            "--only" => {
                only = it
                    .next()
                    .context("--only LIST")?
                    .split(',')
                    .map(str::to_string)
                    .collect();
                if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    bail!("unknown section `{bad}` (known: {})", SECTIONS.join(","));
                }
            }
            "--quick" => {
                params = Params::quick();
                quick = true;
            }
            "-h" | "--help" => {
                println!(
                    "sbbench --gateway BIN --peers DIR --out DIR [--docs docs/benchmarks.md] [--reps N] [--only {}] [--quick]\n\
                     sbbench --render RESULTS.json   (rewrite RESULTS.md from a results document)",
                    SECTIONS.join(",")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    if let Some(r) = reps {
        params.reps = r;
    }
    // The heavy sections run fewer repetitions, never more than asked for.
    params.idle_reps = params.idle_reps.min(params.reps);
    params.fan10k_reps = params.fan10k_reps.min(params.reps);
    let out = PathBuf::from(out.unwrap_or_else(|| "e2e/bench/results".into()));
    let work_dir = out.join("logs");
    std::fs::create_dir_all(&work_dir)?;
    let env = Env {
        gateway_bin: PathBuf::from(
            gateway.unwrap_or_else(|| "target/release/switchboard-gateway".into()),
        ),
        peers_dir: PathBuf::from(peers.unwrap_or_else(|| "e2e/bench/peers".into())),
        work_dir: std::fs::canonicalize(&work_dir)?,
        node: "node".into(),
        nginx: which("nginx").unwrap_or_else(|| "/usr/sbin/nginx".into()),
        nats_server: which("nats-server").unwrap_or_else(|| "/usr/sbin/nats-server".into()),
    };
    if !env.gateway_bin.exists() {
        bail!(
            "{} not found: cargo build --release -p switchboard-gateway",
            env.gateway_bin.display()
        );
    }
    Ok(Args {
        env,
        out,
        params,
        only,
        quick,
        docs,
    })
}

fn which(bin: &str) -> Option<String> {
    std::env::var("PATH").ok()?.split(':').find_map(|d| {
        let p = PathBuf::from(d).join(bin);
        p.exists().then(|| p.display().to_string())
    })
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s).trim().to_string()
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn meta(env: &Env, params: &Params) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let pkg = |name: &str| -> String {
        std::fs::read_to_string(
            env.peers_dir
                .join("node_modules")
                .join(name)
                .join("package.json"),
        )
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
    };
    let gw_version = cmd_out(&env.gateway_bin.display().to_string(), &["--version"]);
    let rev = cmd_out("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !cmd_out("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    json!({
        "date_utc": cmd_out("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "kernel": cmd_out("uname", &["-r"]),
        "gateway": gw_version,
        "git_rev": format!("{rev}{}", if dirty { " (with uncommitted changes)" } else { "" }),
        "node": cmd_out(&env.node, &["--version"]),
        "ws": pkg("ws"),
        "socket.io": pkg("socket.io"),
        "nginx": cmd_out(&env.nginx, &["-v"]),
        "nats_server": cmd_out(&env.nats_server, &["--version"]),
        "params": params.json(),
    })
}

/// Busy share of both CPUs during one second, plus the load average: how contended the machine
/// was (other engineers' builds share it).
fn noise() -> Value {
    json!({"cpu_busy_pct": r1(cpu_busy_sample(Duration::from_secs(1)) * 100.0), "loadavg": loadavg()})
}

fn main() -> std::process::ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = match rt {
        Ok(rt) => rt.block_on(run()),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sbbench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    // `--render FILE.json`: rewrite the Markdown next to a results document (no measuring).
    let argv: Vec<String> = std::env::args().collect();
    if let Some(r) = sections::helper_main(&argv).await {
        return r;
    }
    if let [_, flag, json_path] = argv.as_slice()
        && flag == "--render"
    {
        let path = PathBuf::from(json_path);
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let md_path = path.with_extension("md");
        std::fs::write(&md_path, report::markdown(&doc))?;
        println!("sbbench: wrote {}", md_path.display());
        return Ok(());
    }
    let args = parse_args()?;
    let p = args.params.clone();
    let env = args.env.clone();
    let started = std::time::Instant::now();
    println!("sbbench: logs in {}", env.work_dir.display());
    let mut doc = json!({ "meta": meta(&env, &p), "noise_before": noise() });
    let want = |s: &str| args.only.iter().any(|o| o == s);

    if want("latency") || want("throughput") {
        let (lat, tput) = proxy_section(&env, &p, want("latency"), want("throughput")).await?;
        if let Some(l) = lat {
            doc["latency"] = l;
        }
        if let Some(t) = tput {
            doc["throughput"] = t;
        }
    }
    if want("fanout") {
        doc["fanout"] = fanout_section(&env, &p).await?;
    }
    if want("memory") {
        doc["memory"] = memory_section(&env, &p).await?;
    }
    if want("crosspod") {
        doc["crosspod"] = crosspod_section(&env, &p).await?;
    }
    let signer = auth::Signer::generate()?;
    if want("storm") {
        doc["storm"] = sections::storm_section(&env, &p, &signer).await?;
    }
    if want("idle15k") {
        doc["idle15k"] = sections::idle_section(&env, &p, &signer).await?;
    }
    if want("fanout10k") {
        doc["fanout10k"] = sections::fanout10k_section(&env, &p).await?;
    }
    if want("compression") {
        doc["compression"] = sections::compression_section(&env, &p).await?;
    }
    doc["noise_after"] = noise();
    doc["elapsed_s"] = json!(r1(started.elapsed().as_secs_f64()));

    std::fs::create_dir_all(&args.out)?;
    let md = report::markdown(&doc);
    // Only a complete run at full size replaces `latest`; partial or --quick runs go beside it.
    let complete = !args.quick && SECTIONS.iter().all(|s| want(s));
    let stem = if complete { "latest" } else { "partial" };
    let md_path = args.out.join(format!("{stem}.md"));
    std::fs::write(
        args.out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&doc)?,
    )?;
    std::fs::write(&md_path, &md)?;
    // Plots beside the results; a complete run also refreshes the documentation page.
    let plot_files = plots::write(&doc, &args.out, stem)?;
    if complete && let Some(docs) = &args.docs {
        plots::update_docs(docs, &doc, &md)?;
        println!("sbbench: updated {} and its plots", docs.display());
    }
    println!("\n{md}");
    for f in plot_files {
        println!("sbbench: plot {}", f.display());
    }
    println!(
        "sbbench: wrote {} and {stem}.json ({:.0} s)",
        md_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Per-target values of one metric across repetitions -> {median, min, max, runs}.
pub(crate) fn agg(values: &[f64]) -> Value {
    let (lo, hi) = range(values);
    json!({"median": r1(median(values)), "min": r1(lo), "max": r1(hi), "runs": values.iter().map(|v| r1(*v)).collect::<Vec<_>>()})
}

// --- 1. proxy mode -------------------------------------------------------------------------

async fn proxy_section(
    env: &Env,
    p: &Params,
    do_latency: bool,
    do_tput: bool,
) -> Result<(Option<Value>, Option<Value>)> {
    println!("== proxy: one echo app; direct vs gateway vs nginx");
    let echo = servers::node_peer(env, "proxy-echo", "echo.js")?;
    let gw = servers::gateway_proxy_to(env, "proxy-gateway", echo.port)?;
    let ngx = servers::nginx_proxy_to(env, "proxy-nginx", echo.port)?;
    let targets: [(&str, &Server, &str); 3] = [
        ("direct", &echo, "/"),
        ("gateway", &gw, "/echo"),
        ("nginx", &ngx, "/echo"),
    ];
    let mut lat_json = None;
    if do_latency {
        let mut p50: [Vec<f64>; 3] = Default::default();
        let mut p99: [Vec<f64>; 3] = Default::default();
        let mut runs = Vec::new();
        let paths: Vec<(u16, &str)> = targets.iter().map(|(_, s, p)| (s.port, *p)).collect();
        for rep in 0..p.reps {
            let lats =
                latency::sequential_interleaved(&paths, p.latency_n, p.latency_warmup).await?;
            for (i, ((name, _, _), l)) in targets.iter().zip(lats).enumerate() {
                println!(
                    "  latency rep {rep} {name:8} p50 {:7.1} us  p99 {:7.1} us",
                    l.p50, l.p99
                );
                p50[i].push(l.p50);
                p99[i].push(l.p99);
                runs.push(json!({"rep": rep, "target": name, "lat": l.json()}));
            }
        }
        let mut per = serde_json::Map::new();
        for (i, (name, _, _)) in targets.iter().enumerate() {
            per.insert(
                name.to_string(),
                json!({"p50_us": agg(&p50[i]), "p99_us": agg(&p99[i])}),
            );
        }
        // Added latency per repetition (same rep, back-to-back), then the median of those.
        let added = |k: usize, v: &[Vec<f64>; 3]| -> Vec<f64> {
            (0..p.reps).map(|r| v[k][r] - v[0][r]).collect()
        };
        let (g50, g99, n50, n99) = (
            added(1, &p50),
            added(1, &p99),
            added(2, &p50),
            added(2, &p99),
        );
        let ratio =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
        // Ratios of medians (a per-repetition ratio explodes when nginx adds ~0 µs).
        let added_json = json!({
            "gateway": {"p50_us": agg(&g50), "p99_us": agg(&g99)},
            "nginx": {"p50_us": agg(&n50), "p99_us": agg(&n99)},
            "ratio_gateway_over_nginx": {
                "p50": r3(median(&g50) / median(&n50)),
                "p99": r3(median(&g99) / median(&n99)),
            },
        });
        let rtt_ratio = json!({
            "p50": r3(median(&ratio(&p50[1], &p50[2]))),
            "p99": r3(median(&ratio(&p99[1], &p99[2]))),
        });
        lat_json = Some(json!({"targets": Value::Object(per), "added": added_json,
            "round_trip_ratio_gateway_over_nginx": rtt_ratio, "runs": runs}));
    }
    let mut tput_json = None;
    if do_tput {
        let mut rps: [Vec<f64>; 3] = Default::default();
        let mut p50: [Vec<f64>; 3] = Default::default();
        let mut p99: [Vec<f64>; 3] = Default::default();
        let mut cpu: [Vec<f64>; 3] = Default::default();
        let mut runs = Vec::new();
        let mut pools = Vec::new();
        for (_, srv, path) in &targets {
            pools.push(latency::Pool::connect(srv.port, path, p.tput_conns).await?);
        }
        // Each repetition: the paths take turns in short slices (warm-up + window each), so
        // background load from other processes lands on all of them alike.
        let slices = p.tput_slices.max(1);
        let window = p.tput_window / slices as u32;
        for rep in 0..p.reps {
            let mut samples: [Vec<Duration>; 3] = Default::default();
            let mut errors = [0usize; 3];
            let mut proxy_cpu = [0f64; 3];
            for _ in 0..slices {
                for (i, (_, srv, _)) in targets.iter().enumerate() {
                    let c0 = srv.proc.cpu_seconds();
                    let (s, e) = pools[i].slice(p.tput_warmup, window).await?;
                    proxy_cpu[i] += srv.proc.cpu_seconds() - c0;
                    samples[i].extend(s);
                    errors[i] += e;
                }
            }
            for (i, (name, _, _)) in targets.iter().enumerate() {
                let t = latency::throughput(&samples[i], p.tput_window, errors[i]);
                // The proxy's own CPU per round trip (the echo app's is the same for everyone);
                // warm-up round trips are estimated at the measured rate.
                let total_rt = t.round_trips_per_s
                    * (p.tput_window + p.tput_warmup * slices as u32).as_secs_f64();
                let cpu_us_per_rt = if i == 0 {
                    0.0
                } else {
                    proxy_cpu[i] * 1e6 / total_rt.max(1.0)
                };
                println!(
                    "  throughput rep {rep} {name:8} {:9.0} rt/s  p50 {:7.1} us  p99 {:7.1} us  proxy cpu {:5.1} us/rt  errors {}",
                    t.round_trips_per_s, t.lat.p50, t.lat.p99, cpu_us_per_rt, t.errors
                );
                rps[i].push(t.round_trips_per_s);
                p50[i].push(t.lat.p50);
                p99[i].push(t.lat.p99);
                cpu[i].push(cpu_us_per_rt);
                runs.push(json!({"rep": rep, "target": name, "round_trips_per_s": r1(t.round_trips_per_s),
                    "lat": t.lat.json(), "errors": t.errors, "proxy_cpu_us_per_round_trip": r3(cpu_us_per_rt)}));
            }
        }
        for pool in pools {
            pool.close().await;
        }
        let mut per = serde_json::Map::new();
        for (i, (name, _, _)) in targets.iter().enumerate() {
            per.insert(
                name.to_string(),
                json!({"round_trips_per_s": agg(&rps[i]), "p50_us": agg(&p50[i]), "p99_us": agg(&p99[i]),
                       "proxy_cpu_us_per_round_trip": agg(&cpu[i])}),
            );
        }
        let ratio: Vec<f64> = rps[1].iter().zip(&rps[2]).map(|(g, n)| g / n).collect();
        let vs_direct: Vec<f64> = rps[1].iter().zip(&rps[0]).map(|(g, d)| g / d).collect();
        tput_json = Some(json!({
            "targets": Value::Object(per),
            "ratio_gateway_over_nginx": r3(median(&ratio)),
            "ratio_gateway_over_direct": r3(median(&vs_direct)),
            "runs": runs,
        }));
    }
    gw.stop();
    ngx.stop();
    echo.stop();
    Ok((lat_json, tput_json))
}

// --- 2. rooms fan-out ----------------------------------------------------------------------

async fn fanout_section(env: &Env, p: &Params) -> Result<Value> {
    println!(
        "== fan-out: {} members, {} x {}-byte messages",
        p.fan_members, p.fan_messages, p.fan_size
    );
    let gw = servers::gateway_rooms(env, "fanout-gateway", None)?;
    let wsr = servers::node_peer(env, "fanout-ws-room", "ws-room.js")?;
    let sio = servers::node_peer(env, "fanout-socketio", "sio-room.js")?;
    // The Socket.IO server, checked once with the official client.
    let check = std::process::Command::new(&env.node)
        .arg(env.peers_dir.join("sio-check.js"))
        .arg(sio.port.to_string())
        .output()?;
    if !check.status.success() {
        bail!(
            "Socket.IO sanity check failed: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let targets: Vec<(&str, &Server, fanout::Target)> = vec![
        (
            "gateway-json",
            &gw,
            fanout::Target {
                port: gw.port,
                dialect: Dialect::Switchboard,
                member_path: "/rooms".into(),
                publisher_path: "/rooms".into(),
                room: Some("bench:fan".into()),
            },
        ),
        (
            "gateway-raw",
            &gw,
            fanout::Target {
                port: gw.port,
                dialect: Dialect::Plain,
                member_path: "/raw/fan".into(),
                publisher_path: "/raw/fan".into(),
                room: None,
            },
        ),
        (
            "node-ws",
            &wsr,
            fanout::Target {
                port: wsr.port,
                dialect: Dialect::Plain,
                member_path: "/?role=member".into(),
                publisher_path: "/?role=pub".into(),
                room: None,
            },
        ),
        (
            "socket.io",
            &sio,
            fanout::Target {
                port: sio.port,
                dialect: Dialect::SocketIo,
                member_path: sio_path("member"),
                publisher_path: sio_path("pub"),
                room: None,
            },
        ),
        // The room protocol's binary encoding, same route and room as gateway-json.
        (
            "gateway-proto",
            &gw,
            fanout::Target {
                port: gw.port,
                dialect: Dialect::SwitchboardProto,
                member_path: "/rooms".into(),
                publisher_path: "/rooms".into(),
                room: Some("bench:fan".into()),
            },
        ),
    ];
    let mut rate: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut runs = Vec::new();
    let mut paced_runs = Vec::new();
    for rep in 0..p.reps {
        for (i, (name, srv, t)) in targets.iter().enumerate() {
            let cpu = || srv.proc.cpu_seconds();
            let r = fanout::run(t, p.fan_members, p.fan_messages, p.fan_size, None, &cpu).await?;
            println!(
                "  fan-out burst rep {rep} {name:13} {:10.0} deliveries/s  {}/{} delivered in {:.2} s  first after {:.1} ms  server cpu {:.2} s",
                r.per_second, r.deliveries, r.expected, r.seconds, r.first_ms, r.server_cpu_s
            );
            rate[i].push(r.per_second);
            runs.push(json!({"rep": rep, "target": name, "deliveries_per_s": r1(r.per_second),
                "deliveries": r.deliveries, "expected": r.expected, "seconds": r3(r.seconds),
                "first_delivery_ms": r1(r.first_ms), "server_cpu_s": r3(r.server_cpu_s),
                "delivery_bytes": r.delivery_bytes,
                "server_cpu_us_per_delivery": r3(r.server_cpu_s * 1e6 / (r.deliveries.max(1) as f64))}));
        }
        for (name, srv, t) in &targets {
            let cpu = || srv.proc.cpu_seconds();
            let r = fanout::run(
                t,
                p.fan_members,
                p.fan_paced_messages,
                p.fan_size,
                Some(p.fan_pace),
                &cpu,
            )
            .await?;
            let reach = r.reach_all.unwrap_or_else(|| stats::summarize(&[]));
            let us = r.server_cpu_s * 1e6 / (r.deliveries.max(1) as f64);
            println!(
                "  fan-out paced rep {rep} {name:13} {}/{} delivered  reach-all p50 {:8.1} us  p99 {:8.1} us  server cpu {:.2} us/delivery",
                r.deliveries, r.expected, reach.p50, reach.p99, us
            );
            paced_runs.push(json!({"rep": rep, "target": name, "deliveries": r.deliveries,
                "expected": r.expected, "reach_all": reach.json(), "server_cpu_s": r3(r.server_cpu_s),
                "server_cpu_us_per_delivery": r3(us)}));
        }
    }
    let field = |runs: &[Value], name: &str, path: &[&str]| -> Vec<f64> {
        runs.iter()
            .filter(|r| r["target"] == *name)
            .filter_map(|r| path.iter().fold(r, |v, k| &v[*k]).as_f64())
            .collect()
    };
    let undelivered = |runs: &[Value], name: &str| -> u64 {
        runs.iter()
            .filter(|r| r["target"] == *name)
            .map(|r| r["expected"].as_u64().unwrap_or(0) - r["deliveries"].as_u64().unwrap_or(0))
            .sum()
    };
    let mut per = serde_json::Map::new();
    let mut lost = serde_json::Map::new();
    let mut paced = serde_json::Map::new();
    for (i, (name, _, _)) in targets.iter().enumerate() {
        let bytes = runs
            .iter()
            .filter(|r| r["target"] == *name)
            .filter_map(|r| r["delivery_bytes"].as_u64())
            .max()
            .unwrap_or(0);
        per.insert(
            name.to_string(),
            json!({"deliveries_per_s": agg(&rate[i]),
                   "server_cpu_us_per_delivery": agg(&field(&runs, name, &["server_cpu_us_per_delivery"])),
                   "delivery_bytes": bytes}),
        );
        lost.insert(name.to_string(), json!(undelivered(&runs, name)));
        paced.insert(
            name.to_string(),
            json!({"server_cpu_us_per_delivery": agg(&field(&paced_runs, name, &["server_cpu_us_per_delivery"])),
                   "reach_all_p50_us": agg(&field(&paced_runs, name, &["reach_all", "p50_us"])),
                   "reach_all_p99_us": agg(&field(&paced_runs, name, &["reach_all", "p99_us"])),
                   "undelivered": undelivered(&paced_runs, name)}),
        );
    }
    let ratio = |a: usize, b: usize| -> f64 {
        r3(median(
            &rate[a]
                .iter()
                .zip(&rate[b])
                .map(|(x, y)| x / y)
                .collect::<Vec<_>>(),
        ))
    };
    let doc = json!({
        "targets": Value::Object(per),
        "undelivered_total": Value::Object(lost),
        "ratios": {
            "gateway_json_over_node_ws": ratio(0, 2),
            "gateway_json_over_socketio": ratio(0, 3),
            "gateway_raw_over_node_ws": ratio(1, 2),
            "gateway_raw_over_socketio": ratio(1, 3),
            "gateway_proto_over_json": ratio(4, 0),
        },
        "runs": runs,
        "paced": {
            "messages": p.fan_paced_messages,
            "interval_ms": p.fan_pace.as_secs_f64() * 1e3,
            "targets": Value::Object(paced),
            "runs": paced_runs,
        },
    });
    drop(targets);
    gw.stop();
    wsr.stop();
    sio.stop();
    Ok(doc)
}

// --- 3. idle memory ------------------------------------------------------------------------

async fn memory_section(env: &Env, p: &Params) -> Result<Value> {
    println!("== idle memory: 0 vs {} connections", p.idle_conns);
    type Start = fn(&Env, &str) -> Result<Server>;
    let kinds: [(&str, Start, &str, Dialect); 5] = [
        (
            "gateway-proxy",
            servers::gateway_proxy,
            "/echo",
            Dialect::Plain,
        ),
        (
            "gateway-rooms",
            |e, n| servers::gateway_rooms(e, n, None),
            "/rooms",
            Dialect::Switchboard,
        ),
        (
            "node-ws",
            |e, n| servers::node_peer(e, n, "echo.js"),
            "/",
            Dialect::Plain,
        ),
        ("nginx-proxy", servers::nginx_proxy, "/echo", Dialect::Plain),
        (
            "socket.io",
            |e, n| servers::node_peer(e, n, "sio-room.js"),
            "SIO",
            Dialect::SocketIo,
        ),
    ];
    let mut per_conn: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut base: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut loaded: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut runs = Vec::new();
    for rep in 0..p.reps {
        for (i, (name, start, path, dialect)) in kinds.iter().enumerate() {
            let srv = start(env, &format!("memory-{name}-{rep}"))?;
            tokio::time::sleep(Duration::from_millis(700)).await;
            let rss0 = srv.proc.rss_kib();
            let path = if *path == "SIO" {
                sio_path("member")
            } else {
                path.to_string()
            };
            let conns = idle::open(srv.port, &path, *dialect, p.idle_conns).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss1 = srv.proc.rss_kib();
            let upstream = srv.deps.first().map(|d| d.rss_kib());
            let active = srv
                .admin
                .and_then(|a| procs::http_get_body(a, "/metrics").ok())
                .map(|m| active_connections(&m));
            let (alive, dead) = idle::check_alive(conns, *dialect).await;
            let kb = (rss1 as f64 - rss0 as f64) / p.idle_conns as f64 * 1024.0 / 1000.0;
            println!(
                "  memory rep {rep} {name:13} rss {:7.1} MiB -> {:7.1} MiB  {:6.2} kB/conn  alive {alive}/{}{}",
                rss0 as f64 / 1024.0,
                rss1 as f64 / 1024.0,
                kb,
                alive + dead,
                active.map_or(String::new(), |a| format!("  (gateway reports {a} active)"))
            );
            per_conn[i].push(kb);
            base[i].push(rss0 as f64 / 1024.0);
            loaded[i].push(rss1 as f64 / 1024.0);
            runs.push(
                json!({"rep": rep, "target": name, "rss0_kib": rss0, "rss1_kib": rss1,
                "kb_per_conn": r3(kb), "alive": alive, "dead": dead,
                "upstream_echo_rss_kib": upstream, "gateway_active_connections": active}),
            );
            srv.stop();
        }
    }
    let mut per = serde_json::Map::new();
    for (i, (name, _, _, _)) in kinds.iter().enumerate() {
        per.insert(
            name.to_string(),
            json!({"kb_per_conn": agg(&per_conn[i]), "rss0_mib": agg(&base[i]), "rss1_mib": agg(&loaded[i])}),
        );
    }
    Ok(json!({"connections": p.idle_conns, "targets": Value::Object(per), "runs": runs}))
}

/// Sum of `switchboard_connections_active` series in a Prometheus text page.
fn active_connections(metrics: &str) -> i64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("switchboard_connections_active"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

// --- 4. cross-pod hop over NATS ------------------------------------------------------------

async fn crosspod_section(env: &Env, p: &Params) -> Result<Value> {
    println!(
        "== rooms publish -> receive latency (local room; cross-pod over NATS when available)"
    );
    let mut doc = serde_json::Map::new();
    let gw = servers::gateway_rooms(env, "hop-embedded", None)?;
    // NATS: two pods on one nats-server, if the gateway has the NATS bus.
    let nats = nats_pods(env);
    // (name, publisher's pod, member's pod, route)
    let mut setups: Vec<(&str, u16, u16, &str)> = vec![
        ("embedded-single-pod", gw.port, gw.port, "/rooms"),
        ("embedded-single-pod-history", gw.port, gw.port, "/hist"),
    ];
    // The baseline on the same nats-server: two relay "pods" (helper processes).
    let mut relays = Vec::new();
    if let Ok((_, _, _, url)) = &nats {
        for pod in ["a", "b"] {
            let args = vec!["relay".to_string(), format!("nats={url}")];
            let log = env.work_dir.join(format!("hop-relay-{pod}.log"));
            let mut h = procs::Helper::spawn(&format!("relay-{pod}"), &args, &log)?;
            let line = h.recv_async()?;
            let port: u16 = line
                .strip_prefix("listening ")
                .and_then(|p| p.trim().parse().ok())
                .with_context(|| format!("relay {pod}: {line}"))?;
            relays.push((h, port));
        }
    }
    if let Ok((_, a, b, _)) = &nats {
        setups.push(("nats-single-pod", a.port, a.port, "/rooms"));
        setups.push(("nats-cross-pod", a.port, b.port, "/rooms"));
        setups.push(("nats-single-pod-history", a.port, a.port, "/hist"));
        setups.push(("nats-cross-pod-history", a.port, b.port, "/hist"));
    }
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut runs = Vec::new();
    for rep in 0..p.reps {
        for (i, (name, from, to, path)) in setups.iter().enumerate() {
            let l = crosspod::hop(*from, *to, path, p.hop_n, p.hop_n / 10).await?;
            println!(
                "  hop rep {rep} {name:28} p50 {:7.1} us  p99 {:7.1} us",
                l.p50, l.p99
            );
            p50[i].push(l.p50);
            p99[i].push(l.p99);
            runs.push(json!({"rep": rep, "target": name, "lat": l.json()}));
        }
        if let (Ok((_, _, _, url)), [(_, ra), (_, rb)]) = (&nats, relays.as_slice()) {
            let l = relay::hop(*ra, *rb, p.hop_n, p.hop_n / 10).await?;
            // The raw round trip is only the floor under both rows: a stall there (seen
            // rarely: a core NATS message not delivered within 5 s) drops this repetition's
            // floor, not the run.
            let mut rows = vec![("relay-cross-pod", l)];
            match relay::nats_round_trip(url, p.hop_n, p.hop_n / 10).await {
                Ok(raw) => rows.push(("nats-raw", raw)),
                Err(e) => println!("  hop rep {rep} nats-raw: skipped ({e:#})"),
            }
            for (name, l) in rows {
                println!(
                    "  hop rep {rep} {name:28} p50 {:7.1} us  p99 {:7.1} us",
                    l.p50, l.p99
                );
                runs.push(json!({"rep": rep, "target": name, "lat": l.json()}));
            }
        }
    }
    // Relay rows and the gateway's cross-pod hop over the relay's, paired by repetition.
    let lat_of = |name: &str, k: &str| -> Vec<f64> {
        runs.iter()
            .filter(|r| r["target"] == name)
            .filter_map(|r| r["lat"][k].as_f64())
            .collect()
    };
    if !relays.is_empty() {
        for name in ["relay-cross-pod", "nats-raw"] {
            doc.insert(
                name.to_string(),
                json!({"p50_us": agg(&lat_of(name, "p50_us")), "p99_us": agg(&lat_of(name, "p99_us"))}),
            );
        }
        let ratio = |k: &str| {
            let (g, r) = (lat_of("nats-cross-pod", k), lat_of("relay-cross-pod", k));
            r3(median(
                &g.iter().zip(&r).map(|(g, r)| g / r).collect::<Vec<_>>(),
            ))
        };
        doc.insert(
            "ratio_gateway_cross_pod_over_relay".into(),
            json!({"p50": ratio("p50_us"), "p99": ratio("p99_us")}),
        );
    }
    for (mut h, _) in relays {
        h.proc.stop();
    }
    for (i, (name, _, _, _)) in setups.iter().enumerate() {
        doc.insert(
            name.to_string(),
            json!({"p50_us": agg(&p50[i]), "p99_us": agg(&p99[i])}),
        );
    }
    match nats {
        Ok((nats_proc, a, b, _)) => {
            doc.insert("nats".into(), json!({"status": "ran"}));
            a.stop();
            b.stop();
            drop(nats_proc);
        }
        Err(e) => {
            let reason = format!("{e:#}");
            println!(
                "  cross-pod skipped: {}",
                reason
                    .lines()
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
            );
            doc.insert(
                "nats".into(),
                json!({"status": "skipped", "reason": reason}),
            );
        }
    }
    doc.insert("runs".into(), Value::Array(runs));
    gw.stop();
    Ok(Value::Object(doc))
}

/// nats-server plus two gateway pods on it, or why not.
fn nats_pods(env: &Env) -> Result<(procs::Proc, Server, Server, String)> {
    // The bus is a file or (since it was split) a directory.
    let repo_nats =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway/src/rooms/bus");
    if !repo_nats.join("nats.rs").exists() && !repo_nats.join("nats").is_dir() {
        bail!("the NATS bus is not in this tree yet (gateway/src/rooms/bus/nats is missing)");
    }
    let (nats, url) = servers::nats(env, "hop-nats")?;
    let a = servers::gateway_rooms(env, "hop-pod-a", Some(&url))
        .context("gateway pod A with bus.nats did not become ready")?;
    let b = servers::gateway_rooms(env, "hop-pod-b", Some(&url))
        .context("gateway pod B with bus.nats did not become ready")?;
    Ok((nats, a, b, url))
}
