//! Crash recovery with real `everruns serve` processes on one PostgreSQL: SIGKILL at random
//! moments during many tool-using, streaming runs loses nothing and repeats nothing (a
//! plugin's state changes exactly once per call); a worker paused past its lease
//! (SIGSTOP/SIGCONT) writes nothing once another worker took over; a run waiting for tool
//! approval holds no worker slot, survives a SIGKILL and resumes in another process after
//! the decision; two processes deciding one approval at once: one wins, one resumption; a
//! run taken over after SIGKILL stays in the trace of the request that started it; a run's
//! budgets keep counting across a SIGKILL (they are read from the journal, not memory).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::otlp::{Receiver, TRACE_ID, attribute, hex, named, traceparent};
use common::{Everruns, KEY, LEASE_MS, client, get_json, post_json};
use everruns_core::KvScope;
use everruns_testkit::guests::{HOOKS, WELL_BEHAVED, plugin_dir};
use everruns_testkit::{FakeLlm, Reply, SseReader, TestDb};
use serde_json::{Value, json};

fn signal(pid: &str, sig: &str) {
    let status = Command::new("kill").args([sig, pid]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// A data directory with the well-behaved plugin installed.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    plugin_dir(
        &dir.path().join("plugins"),
        "well-behaved",
        "well-behaved",
        WELL_BEHAVED,
    );
    dir
}

/// The whole event log of a session as JSON.
async fn event_log(client: &reqwest::Client, base: &str, sid: &str) -> Vec<Value> {
    let page = get_json(
        client,
        &format!("{base}/v1/sessions/{sid}/events?limit=500"),
    )
    .await;
    assert!(page["next_since"].is_null(), "log fits one page: {page}");
    page["data"].as_array().unwrap().clone()
}

/// Opens an SSE stream with `Last-Event-ID: since` and reads the events up to `until` (the
/// last sequence number of the log), checking the `id:` and `event:` lines against the data.
async fn sse_replay(
    client: &reqwest::Client,
    base: &str,
    sid: &str,
    since: i64,
    until: i64,
) -> Vec<Value> {
    let response = client
        .get(format!("{base}/v1/sessions/{sid}/events"))
        .bearer_auth(KEY)
        .header("accept", "text/event-stream")
        .header("last-event-id", since.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    if since >= until {
        return Vec::new();
    }
    SseReader::new(response)
        .until(|e| e.id >= until)
        .await
        .into_iter()
        .map(|e| {
            assert_eq!(e.data["seq"], e.id, "SSE id matches the event: {}", e.data);
            assert_eq!(
                e.data["type"],
                e.event.as_str(),
                "SSE event matches: {}",
                e.data
            );
            e.data
        })
        .collect()
}

/// A small deterministic generator (xorshift); the seed is printed so a failure can be rerun
/// with `CRASH_TEST_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("CRASH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// The time of day (UTC) like the event log's `created_at`, for failure reports.
fn utc_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}

/// Text that marks a session's user message, found again in the fake LLM's request log.
fn marker(i: usize) -> String {
    format!("crash-session-{i}-end")
}

/// Rounds of messages, each ended by one SIGKILL.
const ROUNDS: usize = 6;
/// Messages (sessions, runs) per round.
const PER_ROUND: usize = 10;
const SESSIONS: usize = ROUNDS * PER_ROUND;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_runs_loses_nothing() {
    let seed = seed();
    eprintln!("CRASH_TEST_SEED={seed}");
    let mut rng = Rng(seed);
    let db = TestDb::postgres().await;
    let llm = FakeLlm::start().await;
    // Count once, then answer in text; every delta takes a while so streams are in flight.
    let delay = Duration::from_millis(60);
    llm.set_fallback(move |request| {
        if request.last_message_is_tool_result() {
            Reply::text(format!(
                "done: the counter said {} and that is all",
                request.tool_results()[0].1
            ))
            .with_delta_delay(delay)
        } else {
            Reply::tool_call("well-behaved__count", json!({})).with_delta_delay(delay)
        }
    });

    let dirs = [data_dir(), data_dir()];
    let mut spawned = 0;
    let mut procs: Vec<Everruns> = Vec::new();
    for dir in &dirs {
        procs.push(Everruns::spawn(dir.path(), &db, &llm, spawned));
        spawned += 1;
    }
    for p in &mut procs {
        p.healthy().await;
    }
    let http = client();

    // One agent per session: the plugin's counter is per agent (the manifest's default KV
    // scope), so every run must see exactly 1, replayed or not.
    let (mut agents, mut sessions) = (Vec::new(), Vec::new());
    for i in 0..SESSIONS {
        let base = &procs[i % 2].base;
        let agent = post_json(
            &http,
            &format!("{base}/v1/agents"),
            json!({"name": format!("counter-{i}"), "system_prompt": "Count.", "capabilities": [{"id": "well-behaved"}]}),
        )
        .await;
        let session = post_json(
            &http,
            &format!("{base}/v1/sessions"),
            json!({"agent_id": agent["id"]}),
        )
        .await;
        agents.push(agent["id"].as_str().unwrap().to_owned());
        sessions.push(session["id"].as_str().unwrap().to_owned());
    }

    // Rounds: a burst of messages, a SIGKILL of a random process at a random moment while
    // those runs stream and call tools, a restart on the same data directory, then a pause
    // of more than a lease plus a poll so that the orphaned runs are taken over and make
    // progress before the next kill. (Killing faster than runs can progress would rightly
    // fail them: after 3 takeovers without a completed step a run gives up.)
    let mut runs = Vec::new();
    let mut kills = 0;
    let mut timeline = Vec::new();
    for round in 0..ROUNDS {
        let burst = round * PER_ROUND..(round + 1) * PER_ROUND;
        for (i, sid) in sessions
            .iter()
            .enumerate()
            .take(burst.end)
            .skip(burst.start)
        {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut attempt = i;
            let run = loop {
                let base = &procs[attempt % 2].base;
                attempt += 1;
                // The Idempotency-Key makes a retry after a lost response safe.
                let sent = http
                    .post(format!("{base}/v1/sessions/{sid}/messages"))
                    .bearer_auth(KEY)
                    .header("idempotency-key", format!("crash-{i}"))
                    .json(&json!({"content": format!("please count {}", marker(i))}))
                    .send()
                    .await;
                if let Ok(r) = sent
                    && r.status().is_success()
                    && let Ok(run) = r.json::<Value>().await
                {
                    break run;
                }
                assert!(Instant::now() < deadline, "could not post message {i}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            runs.push(run["id"].as_str().unwrap().to_owned());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
        let victim = rng.below(2) as usize;
        let pid = procs[victim].pid();
        procs[victim].kill_9();
        timeline.push(format!("{} SIGKILL pid {pid}", utc_now()));
        kills += 1;
        let mut fresh = Everruns::spawn(dirs[victim].path(), &db, &llm, spawned);
        spawned += 1;
        fresh.healthy().await;
        timeline.push(format!("{} pid {} healthy", utc_now(), fresh.pid()));
        procs[victim] = fresh;
        tokio::time::sleep(Duration::from_millis(LEASE_MS + 1_500)).await;
    }
    eprintln!("{kills} SIGKILLs, {spawned} process starts");

    // Every run completes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished: BTreeMap<usize, Value> = BTreeMap::new();
    while finished.len() < runs.len() {
        for (i, rid) in runs.iter().enumerate() {
            if finished.contains_key(&i) {
                continue;
            }
            let run = get_json(&http, &format!("{}/v1/runs/{rid}", procs[i % 2].base)).await;
            match run["status"].as_str().unwrap() {
                "completed" => {
                    finished.insert(i, run);
                }
                "failed" | "cancelled" => {
                    let log = event_log(&http, &procs[i % 2].base, &sessions[i]).await;
                    let summary: Vec<String> = log
                        .iter()
                        .filter(|e| e["type"] != "message.delta")
                        .map(|e| {
                            format!(
                                "{} {} {} {}",
                                e["seq"], e["created_at"], e["type"], e["data"]
                            )
                        })
                        .collect();
                    let mut lines = Vec::new();
                    for dir in &dirs {
                        for entry in std::fs::read_dir(dir.path()).unwrap() {
                            let path = entry.unwrap().path();
                            if path.extension().is_some_and(|e| e == "log") {
                                let text = std::fs::read_to_string(&path).unwrap_or_default();
                                lines.extend(
                                    text.lines()
                                        .filter(|l| l.contains(rid.as_str()))
                                        .map(|l| format!("{}: {l}", path.display())),
                                );
                            }
                        }
                    }
                    panic!(
                        "run {i} did not complete: {}\nprocesses:\n{}\nevents:\n{}\nlogs:\n{}",
                        run["error"],
                        timeline.join("\n"),
                        summary.join("\n"),
                        lines.join("\n")
                    );
                }
                _ => {}
            }
        }
        if finished.len() < runs.len() {
            assert!(
                Instant::now() < deadline,
                "{} of {} runs still unfinished after 60 s:\n{}\n{}",
                runs.len() - finished.len(),
                runs.len(),
                procs[0].log_tail(),
                procs[1].log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    let requests = llm.requests();
    let store = everruns_store::connect(&everruns_store::StoreConfig {
        url: db.url().to_owned(),
        max_connections: 2,
    })
    .await
    .unwrap();
    let (mut takeovers, mut reexecuted, mut extra_requests) = (0, 0, 0);
    for (i, sid) in sessions.iter().enumerate() {
        let base = &procs[i % 2].base;
        let run = &finished[&i];

        // One run per session, despite the retried POSTs.
        let listed = get_json(&http, &format!("{base}/v1/sessions/{sid}/runs")).await;
        assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");

        // The journal: steps 0, 1, 2 exactly once each, llm / tool / llm.
        let steps = run["steps"].as_array().unwrap();
        let numbers: Vec<u64> = steps
            .iter()
            .map(|s| s["step_no"].as_u64().unwrap())
            .collect();
        let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
        assert_eq!(numbers, vec![0, 1, 2], "run {i}: {run}");
        assert_eq!(kinds, vec!["llm", "tool", "llm"], "run {i}: {run}");

        // The event log: 1..N, one run.completed, and it is the last event.
        let log = event_log(&http, base, sid).await;
        let seqs: Vec<i64> = log.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=log.len() as i64).collect::<Vec<_>>(),
            "session {i}: gaps or duplicates"
        );
        let of_type = |t: &str| log.iter().filter(|e| e["type"] == t).collect::<Vec<_>>();
        assert_eq!(of_type("run.completed").len(), 1, "session {i}");
        assert_eq!(log.last().unwrap()["type"], "run.completed", "session {i}");
        assert_eq!(of_type("message.completed").len(), 2, "session {i}");
        let attempts = of_type("run.started").len();
        assert!(attempts >= 1, "session {i}");
        takeovers += attempts - 1;

        // The tool's effect happened exactly once, however often it was executed: its
        // key-value writes (the per-agent counter, then the idempotency key's result) are
        // committed with its journal step, so an execution cut off by a SIGKILL left nothing
        // and the re-execution saw the state as the first one did. The counter is 1, and no
        // execution ever found its own earlier result (`replayed`).
        let recorded_call = steps[0]["output"]["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let tools = of_type("tool.completed");
        assert_eq!(tools.len(), 1, "session {i}: {tools:?}");
        let executions = of_type("tool.started").len();
        if executions > 1 {
            reexecuted += 1;
        }
        let output: Value =
            serde_json::from_str(tools[0]["data"]["output"].as_str().unwrap()).unwrap();
        assert_eq!(
            (&output["count"], &output["replayed"]),
            (&json!(1), &json!(false)),
            "session {i}: the tool's effect repeated ({executions} executions): {output}"
        );
        let scope = KvScope {
            plugin: "well-behaved".to_owned(),
            owner: format!("agent:{}", agents[i]),
        };
        let keys = store.kv_list(&scope, "", 100).await.unwrap();
        let done_key = format!("done/{}:1:{recorded_call}", runs[i]);
        assert_eq!(
            keys,
            vec!["counter".to_owned(), done_key.clone()],
            "session {i}: one idempotency key for every execution"
        );
        let stored = |v: Option<Vec<u8>>| String::from_utf8(v.unwrap()).unwrap();
        assert_eq!(stored(store.kv_get(&scope, "counter").await.unwrap()), "1");
        assert_eq!(stored(store.kv_get(&scope, &done_key).await.unwrap()), "1");

        // The conversation holds each step's message once.
        let messages = get_json(&http, &format!("{base}/v1/sessions/{sid}/messages")).await;
        let roles: Vec<&str> = messages["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            vec!["user", "assistant", "tool", "assistant"],
            "session {i}"
        );

        // No completed LLM step was requested again: each attempt (one run.started each)
        // loses at most the one LLM call it had in flight; the second call always carries
        // the tool call recorded in the journal.
        let mine: Vec<_> = requests
            .iter()
            .filter(|r| r.body().to_string().contains(&marker(i)))
            .collect();
        let seconds: Vec<_> = mine
            .iter()
            .filter(|r| r.last_message_is_tool_result())
            .collect();
        assert!(!seconds.is_empty(), "session {i}");
        for r in &seconds {
            assert_eq!(
                r.tool_results()[0].0,
                recorded_call,
                "session {i}: the answer call used an unrecorded tool call"
            );
        }
        assert!(
            mine.len() <= 2 + (attempts - 1),
            "session {i}: {} LLM requests for 2 LLM steps in {attempts} attempts",
            mine.len()
        );
        extra_requests += mine.len() - 2;

        // SSE resume reproduces the log: from every Last-Event-ID for a few sessions, from
        // the start and a random point for the others.
        let last = log.len() as i64;
        let points: Vec<i64> = if i < 3 {
            (0..last).collect()
        } else {
            vec![0, rng.below(last as u64) as i64]
        };
        for (n, k) in points.into_iter().enumerate() {
            let sse_base = &procs[(i + n) % 2].base;
            let replayed = sse_replay(&http, sse_base, sid, k, last).await;
            assert_eq!(
                replayed.as_slice(),
                &log[k as usize..],
                "session {i}: SSE from Last-Event-ID {k}"
            );
        }
    }
    assert!(takeovers > 0, "no SIGKILL hit a run in flight");
    assert!(requests.iter().all(|r| r.auth_ok));
    assert!(
        requests.len() <= 2 * SESSIONS + takeovers,
        "{} requests",
        requests.len()
    );
    eprintln!(
        "{SESSIONS} runs completed; {takeovers} takeovers, {reexecuted} tool calls executed \
         again after a kill (each counted once), {extra_requests} LLM calls lost in flight, \
         {} requests",
        requests.len()
    );
    drop(procs);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_worker_after_sigstop_writes_nothing() {
    let db = TestDb::postgres().await;
    let llm = FakeLlm::start().await;
    // The first call streams slowly; the one after the takeover answers quickly.
    let slow: String = (1..=30).map(|n| format!("slow{n} ")).collect();
    llm.push(Reply::text(slow.trim_end()).with_delta_delay(Duration::from_millis(150)));
    let fast = "the new worker answered";
    llm.set_fallback(move |_| Reply::text(fast).with_delta_delay(Duration::from_millis(20)));

    let (dir_a, dir_b) = (data_dir(), data_dir());
    let mut a = Everruns::spawn(dir_a.path(), &db, &llm, 0);
    a.healthy().await;
    let http = client();
    let agent = post_json(
        &http,
        &format!("{}/v1/agents", a.base),
        json!({"name": "slow", "system_prompt": "Talk."}),
    )
    .await;
    let session = post_json(
        &http,
        &format!("{}/v1/sessions", a.base),
        json!({"agent_id": agent["id"]}),
    )
    .await;
    let sid = session["id"].as_str().unwrap().to_owned();
    let run = post_json(
        &http,
        &format!("{}/v1/sessions/{sid}/messages", a.base),
        json!({"content": "say a lot"}),
    )
    .await;
    let rid = run["id"].as_str().unwrap().to_owned();

    // Wait until A streams.
    let deadline = Instant::now() + Duration::from_secs(30);
    let a_message = loop {
        let log = event_log(&http, &a.base, &sid).await;
        if let Some(delta) = log.iter().find(|e| e["type"] == "message.delta") {
            break delta["data"]["message_id"].clone();
        }
        assert!(Instant::now() < deadline, "A never streamed: {log:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // B joins; A freezes past its lease; B takes the run over.
    let mut b = Everruns::spawn(dir_b.path(), &db, &llm, 1);
    b.healthy().await;
    signal(&a.pid(), "-STOP");
    let stopped = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    let takeover_seq = loop {
        let log = event_log(&http, &b.base, &sid).await;
        if let Some(started) = log
            .iter()
            .find(|e| e["type"] == "run.started" && e["data"]["takeover"] == true)
        {
            break started["seq"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "B never took over: {log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        stopped.elapsed() >= Duration::from_millis(LEASE_MS) - Duration::from_millis(600),
        "taken over before the lease could expire: {:?}",
        stopped.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&a.pid(), "-CONT");

    // The run completes once, on B.
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = get_json(&http, &format!("{}/v1/runs/{rid}", b.base)).await;
        match run["status"].as_str().unwrap() {
            "completed" => break run,
            "failed" | "cancelled" => panic!("{run}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "run unfinished: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Give A time to wake up, notice and give up (its slow stream ends ~4.5 s after it began).
    let log = event_log(&http, &b.base, &sid).await;
    let grace = Instant::now() + Duration::from_secs(5);
    while Instant::now() < grace
        && !std::fs::read_to_string(&a.log)
            .unwrap_or_default()
            .contains("lease lost")
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let a_log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(
        a_log.contains("lease lost"),
        "A noticed it lost the lease:\n{}",
        a.log_tail()
    );

    // Nothing A did after the takeover landed: the log is as it was at completion.
    let after = event_log(&http, &a.base, &sid).await;
    assert_eq!(after, log, "events were written after the run completed");
    let seqs: Vec<i64> = log.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=log.len() as i64).collect::<Vec<_>>());
    let of_type = |t: &str| log.iter().filter(|e| e["type"] == t).collect::<Vec<_>>();
    assert_eq!(of_type("run.completed").len(), 1);
    assert_eq!(log.last().unwrap()["type"], "run.completed");
    let started = of_type("run.started");
    assert_eq!(started.len(), 2, "{started:?}");
    assert_ne!(started[0]["data"]["worker"], started[1]["data"]["worker"]);
    assert!(
        !log.iter()
            .any(|e| e["seq"].as_i64().unwrap() > takeover_seq
                && e["data"]["message_id"] == a_message),
        "A's stream wrote after the takeover: {log:?}"
    );
    let completed = of_type("message.completed");
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(completed[0]["data"]["text"], fast);
    let b_message = completed[0]["data"]["message_id"].clone();
    assert_ne!(b_message, a_message);
    let streamed: String = log
        .iter()
        .filter(|e| e["type"] == "message.delta" && e["data"]["message_id"] == b_message)
        .map(|e| e["data"]["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, fast);

    // One LLM step, one assistant message.
    let steps = run["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{run}");
    assert_eq!(steps[0]["step_no"], 0);
    assert_eq!(steps[0]["output"]["text"], fast);
    let messages = get_json(&http, &format!("{}/v1/sessions/{sid}/messages", a.base)).await;
    let contents: Vec<(&str, &str)> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(contents, vec![("user", "say a lot"), ("assistant", fast)]);
    assert_eq!(llm.request_count(), 2);
    // A is alive and serving.
    assert!(a.child.try_wait().unwrap().is_none());
    a.healthy().await;
    drop((a, b));
    db.cleanup().await;
}

/// A SIGKILL while a tool call that wrote plugin state is still running, after a hook's
/// decision for it was journaled: the restarted process executes the call again, but the
/// state changes once (the counter is 1) and the hook is not asked again (it counted one
/// call). The agent is edited before the kill: the run still asks the model with the
/// configuration it was created with. On PostgreSQL and on SQLite (kill and restart on the
/// same data directory).
/// The data directory of processes on `db`: SQLite's own directory (the server's database
/// file is `everruns.db` there), or a new one for PostgreSQL (kept alive by the first value).
fn process_dir(db: &TestDb) -> (Option<tempfile::TempDir>, std::path::PathBuf) {
    match db.sqlite_dir() {
        Some(sqlite) => (None, sqlite.to_path_buf()),
        None => {
            let own = data_dir();
            let path = own.path().to_path_buf();
            (Some(own), path)
        }
    }
}

async fn kill_9_during_a_stateful_call(db: &TestDb) {
    let (_own_dir, dir) = process_dir(db);
    // The tool sleeps past the kill; its deadline must not cut it off first.
    let manifest = HOOKS.replace("timeout_ms = 2000", "timeout_ms = 20000");
    plugin_dir(&dir.join("plugins"), "hooks", "hooks", &manifest);
    let llm = FakeLlm::start().await;
    llm.set_fallback(|request| {
        if request.last_message_is_tool_result() {
            Reply::text(format!("counted {}", request.tool_results()[0].1))
        } else {
            Reply::tool_call("hooks__slow_bump", json!({"ms": 0}))
        }
    });
    let mut process = Everruns::spawn(&dir, db, &llm, 0);
    process.healthy().await;
    let http = client();
    let base = process.base.clone();
    let agent = post_json(
        &http,
        &format!("{base}/v1/agents"),
        json!({"name": "bumper", "system_prompt": "Snapshot prompt.",
            "model": {"model": "snapshot-model"},
            "capabilities": [{"id": "hooks",
            "config": {"before_tool": "rewrite:{\"ms\":3000}"}}]}),
    )
    .await;
    let session = post_json(
        &http,
        &format!("{base}/v1/sessions"),
        json!({"agent_id": agent["id"]}),
    )
    .await;
    let sid = session["id"].as_str().unwrap().to_owned();
    post_json(
        &http,
        &format!("{base}/v1/sessions/{sid}/messages"),
        json!({"content": "bump"}),
    )
    .await;

    // Kill once the call has started (the model step with the hook's decision is
    // journaled) and has had time to bump the counter in its buffer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !event_log(&http, &base, &sid)
        .await
        .iter()
        .any(|e| e["type"] == "tool.started")
    {
        assert!(Instant::now() < deadline, "the tool call never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = http
        .patch(format!(
            "{base}/v1/agents/{}",
            agent["id"].as_str().unwrap()
        ))
        .bearer_auth(KEY)
        .json(&json!({"system_prompt": "Edited.", "model": {"model": "edited-model"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    process.kill_9();
    drop(process);

    let mut process = Everruns::spawn(&dir, db, &llm, 1);
    process.healthy().await;
    let base = process.base.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = event_log(&http, &base, &sid).await;
        if log
            .iter()
            .any(|e| e["type"] == "run.completed" || e["type"] == "run.failed")
        {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish after the restart:\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let of_type = |t: &str| log.iter().filter(|e| e["type"] == t).collect::<Vec<_>>();
    assert_eq!(of_type("run.completed").len(), 1, "{log:?}");
    assert_eq!(of_type("tool.started").len(), 2, "executed twice: {log:?}");
    assert_eq!(of_type("run.started").len(), 2, "taken over once: {log:?}");
    assert_eq!(of_type("tool.completed")[0]["data"]["output"], "1");
    let applied = of_type("hook.applied");
    assert_eq!(applied.len(), 1, "{log:?}");
    assert_eq!(
        applied[0]["data"]["decision"]["arguments"],
        json!({"ms": 3000})
    );

    let store = everruns_store::connect(&everruns_store::StoreConfig {
        url: db.url().to_owned(),
        max_connections: 2,
    })
    .await
    .unwrap();
    let scope = KvScope {
        plugin: "hooks".to_owned(),
        owner: format!("session:{sid}"),
    };
    let read = |key: &'static str| {
        let store = store.clone();
        let scope = scope.clone();
        async move {
            store
                .kv_get(&scope, key)
                .await
                .unwrap()
                .map(|v| String::from_utf8(v).unwrap())
        }
    };
    assert_eq!(
        read("counter").await.as_deref(),
        Some("1"),
        "the tool's effect"
    );
    assert_eq!(
        read("calls/before-tool").await.as_deref(),
        Some("1"),
        "the before-tool hook was asked again after the takeover"
    );
    assert_eq!(read("calls/after-tool").await.as_deref(), Some("1"));
    // Both model calls, before and after the takeover, used the run's own configuration.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.model(), "snapshot-model");
        assert_eq!(
            request.messages()[0]["content"]
                .as_str()
                .map(|p| p.starts_with("Snapshot prompt.")),
            Some(true)
        );
    }
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_stateful_call_changes_state_once_postgres() {
    let db = TestDb::postgres().await;
    kill_9_during_a_stateful_call(&db).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_stateful_call_changes_state_once_sqlite() {
    let db = TestDb::sqlite();
    kill_9_during_a_stateful_call(&db).await;
    db.cleanup().await;
}

/// The model asks for `well-behaved__echo` when the message says "approve", else answers.
fn echo_when_asked(llm: &FakeLlm) {
    llm.set_fallback(|request| {
        let asked = request
            .messages()
            .last()
            .and_then(|m| m["content"].as_str())
            .is_some_and(|c| c.contains("approve"));
        if request.last_message_is_tool_result() {
            Reply::text(format!("done: {}", request.tool_results()[0].1))
        } else if asked {
            Reply::tool_call("well-behaved__echo", json!({"file": "report.txt"}))
        } else {
            Reply::text("plain answer")
        }
    });
}

/// An agent whose echo calls need approval, and one session of it; returns the session id.
async fn approval_session(http: &reqwest::Client, base: &str) -> String {
    let agent = post_json(
        http,
        &format!("{base}/v1/agents"),
        json!({"name": format!("careful-{}", AGENTS.fetch_add(1, Ordering::Relaxed)),
            "capabilities": [{"id": "well-behaved"}],
            "tool_approval": {"require": ["*__echo"]}}),
    )
    .await;
    let session = post_json(
        http,
        &format!("{base}/v1/sessions"),
        json!({"agent_id": agent["id"]}),
    )
    .await;
    session["id"].as_str().unwrap().to_owned()
}

/// Numbers the agents of this test binary (names are unique).
static AGENTS: AtomicUsize = AtomicUsize::new(0);

/// Waits until the run has `status` (bounded).
async fn wait_status(http: &reqwest::Client, base: &str, run: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = get_json(http, &format!("{base}/v1/runs/{run}")).await;
        if got["status"] == status {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "run never became {status}: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_run_waits_for_approval_then_another_process_resumes_it() {
    let db = TestDb::postgres().await;
    let llm = FakeLlm::start().await;
    echo_when_asked(&llm);
    let dir = data_dir();
    // One slot: the waiting run must not hold it.
    let mut first = Everruns::spawn_with(
        dir.path(),
        &db,
        &llm,
        0,
        &[("EVERRUNS_EXECUTOR_MAX_RUNS", "1")],
    );
    first.healthy().await;
    let http = client();
    let base = first.base.clone();
    let sid = approval_session(&http, &base).await;
    let run = post_json(
        &http,
        &format!("{base}/v1/sessions/{sid}/messages"),
        json!({"content": "please approve this echo"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = wait_status(&http, &base, &run, "waiting_approval").await;
    assert_eq!(waiting["steps_completed"], 1, "{waiting}");
    let other = approval_session(&http, &base).await;
    let plain = post_json(
        &http,
        &format!("{base}/v1/sessions/{other}/messages"),
        json!({"content": "just answer"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_status(&http, &base, &plain, "completed").await;

    first.kill_9();
    let mut second = Everruns::spawn(dir.path(), &db, &llm, 1);
    second.healthy().await;
    let base = second.base.clone();
    // Still waiting after the restart: nobody decided, nothing was lost.
    assert_eq!(
        get_json(&http, &format!("{base}/v1/runs/{run}")).await["status"],
        "waiting_approval"
    );
    let approvals = get_json(&http, &format!("{base}/v1/runs/{run}/approvals")).await;
    assert_eq!(approvals["total"], 1, "{approvals}");
    let id = approvals["data"][0]["id"].as_str().unwrap();
    post_json(
        &http,
        &format!("{base}/v1/runs/{run}/approvals/{id}"),
        json!({"decision": "approve"}),
    )
    .await;
    let done = wait_status(&http, &base, &run, "completed").await;
    assert_eq!(done["steps_completed"], 3, "{done}");
    let log = event_log(&http, &base, &sid).await;
    let count = |t: &str| log.iter().filter(|e| e["type"] == t).count();
    assert_eq!(count("tool.approval_requested"), 1);
    assert_eq!(count("tool.approval_resolved"), 1);
    assert_eq!(count("tool.started"), 1);
    assert_eq!(count("tool.completed"), 1);
    assert_eq!(count("run.completed"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deciding_one_approval_at_once_one_wins() {
    let db = TestDb::postgres().await;
    let llm = FakeLlm::start().await;
    echo_when_asked(&llm);
    let dir = data_dir();
    let mut a = Everruns::spawn(dir.path(), &db, &llm, 0);
    let mut b = Everruns::spawn(dir.path(), &db, &llm, 1);
    a.healthy().await;
    b.healthy().await;
    let http = client();
    for round in 0..5 {
        let sid = approval_session(&http, &a.base).await;
        let run = post_json(
            &http,
            &format!("{}/v1/sessions/{sid}/messages", a.base),
            json!({"content": format!("approve round {round}")}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        wait_status(&http, &a.base, &run, "waiting_approval").await;
        let approvals = get_json(&http, &format!("{}/v1/runs/{run}/approvals", b.base)).await;
        let id = approvals["data"][0]["id"].as_str().unwrap().to_owned();
        let decide = |base: String, decision: &'static str| {
            let http = http.clone();
            let url = format!("{base}/v1/runs/{run}/approvals/{id}");
            async move {
                let response = http
                    .post(url)
                    .bearer_auth(KEY)
                    .json(&json!({"decision": decision}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            }
        };
        let (x, y) = tokio::join!(
            decide(a.base.clone(), "approve"),
            decide(b.base.clone(), "reject")
        );
        let mut statuses = [x.0, y.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {x:?} {y:?}");
        let loser = if x.0 == 409 { &x.1 } else { &y.1 };
        assert!(
            loser["detail"]
                .as_str()
                .unwrap()
                .contains("already decided"),
            "{loser}"
        );
        let winner = if x.0 == 200 { "approve" } else { "reject" };
        wait_status(&http, &a.base, &run, "completed").await;
        let log = event_log(&http, &a.base, &sid).await;
        let count = |t: &str| log.iter().filter(|e| e["type"] == t).count();
        assert_eq!(count("tool.approval_resolved"), 1, "round {round}");
        assert_eq!(
            count("run.started"),
            2,
            "one start, one resumption: round {round}"
        );
        assert_eq!(count("run.completed"), 1);
        let (ran, refused) = (count("tool.started"), count("tool.blocked"));
        match winner {
            "approve" => assert_eq!((ran, refused), (1, 0), "round {round}"),
            _ => assert_eq!((ran, refused), (0, 1), "round {round}"),
        }
    }
}

/// A run whose first process is SIGKILLed mid-step and which another process takes over stays
/// in one trace: the trace of the request that started it (stored with the run), continued by
/// every claim's `invoke_agent` span.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_taken_over_after_kill_9_stays_in_one_trace() {
    let db = TestDb::postgres().await;
    let dir = data_dir();
    let llm = FakeLlm::start().await;
    // The first process dies in its model call; the second one's call is answered.
    llm.push(Reply::text("never seen").stall_before_headers(Duration::from_secs(120)));
    llm.set_fallback(|_| Reply::text("answered after the takeover"));
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let otlp = [
        ("EVERRUNS_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut first = Everruns::spawn_with(dir.path(), &db, &llm, 0, &otlp);
    first.healthy().await;
    let (http, base) = (client(), first.base.clone());
    let agent = post_json(
        &http,
        &format!("{base}/v1/agents"),
        json!({"name": "traced"}),
    )
    .await;
    let sid = post_json(
        &http,
        &format!("{base}/v1/sessions"),
        json!({"agent_id": agent["id"]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = http
        .post(format!("{base}/v1/sessions/{sid}/messages"))
        .bearer_auth(KEY)
        .header("traceparent", traceparent())
        .json(&json!({"content": "hello"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let run: Value = response.json().await.unwrap();
    let run = run["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while llm.request_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the first process never called the model"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill_9();

    let mut second = Everruns::spawn_with(dir.path(), &db, &llm, 1, &otlp);
    second.healthy().await;
    wait_status(&http, &second.base, &run, "completed").await;
    let spans = receiver
        .wait_for("takeover's invoke_agent span", |spans| {
            named(spans, "invoke_agent")
                .iter()
                .any(|s| attribute(s, "run_id").as_deref() == Some(run.as_str()))
        })
        .await;
    let runs: Vec<_> = named(&spans, "invoke_agent")
        .into_iter()
        .filter(|s| attribute(s, "run_id").as_deref() == Some(run.as_str()))
        .collect();
    assert!(
        runs.iter()
            .any(|s| attribute(s, "lease_token").is_some_and(|t| t != "1")),
        "the takeover (a later lease) exported its span"
    );
    for span in &runs {
        assert_eq!(
            hex(&span.trace_id),
            TRACE_ID,
            "every claim continues the trace"
        );
    }
    for chat in named(&spans, "chat") {
        assert_eq!(hex(&chat.trace_id), TRACE_ID);
    }
    drop(second);
    db.cleanup().await;
}

/// A run with a budget of 4 tool calls is killed after its second; the process that takes it
/// over counts the two already journaled, so the run makes exactly 4 in all, not 2 + 4.
async fn a_budget_keeps_counting_after_kill_9(db: &TestDb) {
    let (_own_dir, dir) = process_dir(db);
    let manifest = HOOKS.replace("timeout_ms = 2000", "timeout_ms = 20000");
    plugin_dir(&dir.join("plugins"), "hooks", "hooks", &manifest);
    let llm = FakeLlm::start().await;
    llm.set_fallback(|_| {
        Reply::tool_call("hooks__slow_bump", json!({"ms": 300})).with_usage(10, 5)
    });
    let mut process = Everruns::spawn(&dir, db, &llm, 0);
    process.healthy().await;
    let http = client();
    let base = process.base.clone();
    let agent = post_json(
        &http,
        &format!("{base}/v1/agents"),
        json!({"name": "budgeted", "system_prompt": "x",
               "model": {"max_tool_calls_per_run": 4},
               "capabilities": [{"id": "hooks"}]}),
    )
    .await;
    let session = post_json(
        &http,
        &format!("{base}/v1/sessions"),
        json!({"agent_id": agent["id"]}),
    )
    .await;
    let sid = session["id"].as_str().unwrap().to_owned();
    let run = post_json(
        &http,
        &format!("{base}/v1/sessions/{sid}/messages"),
        json!({"content": "loop"}),
    )
    .await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while event_log(&http, &base, &sid)
        .await
        .iter()
        .filter(|e| e["type"] == "tool.completed")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "two tool calls never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process.kill_9();
    drop(process);

    let mut process = Everruns::spawn(&dir, db, &llm, 1);
    process.healthy().await;
    let base = process.base.clone();
    let run = wait_status(&http, &base, &run_id, "failed").await;
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("tool call budget of 4") && error.contains("4 tool calls made"),
        "{error}"
    );
    let tools = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "tool")
        .count();
    assert_eq!(
        tools, 4,
        "the budget counted the calls made before the kill"
    );
    assert_eq!(
        run["usage"]["input_tokens"].as_u64(),
        Some(
            10 * run["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["kind"] == "llm")
                .count() as u64
        ),
        "tokens are counted once per model step, across the takeover: {run}"
    );
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_keeps_counting_after_kill_9_postgres() {
    let db = TestDb::postgres().await;
    a_budget_keeps_counting_after_kill_9(&db).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_keeps_counting_after_kill_9_sqlite() {
    let db = TestDb::sqlite();
    a_budget_keeps_counting_after_kill_9(&db).await;
    db.cleanup().await;
}
