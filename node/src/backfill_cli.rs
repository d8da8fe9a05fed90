//! `edgemirror backfill`: starts a backfill job on a running node through its admin API (keys
//! from a file, or `--list-origin` from the bucket's private S3 origin), and with
//! `--follow` draws its progress (keys, bytes, rate, ETA) until it ends. The exit status says how
//! it ended: 0 `complete`, 1 with failed keys (listed) or cancelled, 2 for a usage or API error.
//!
//! An operator's tool, apart from the node: a blocking HTTP client (`ureq`, plain HTTP as the
//! admin listener speaks) and a terminal progress bar (`indicatif`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

/// `edgemirror backfill` flags.
#[derive(clap::Args, Debug)]
pub struct BackfillArgs {
    /// The node's admin listener, e.g. http://127.0.0.1:8081.
    #[arg(long, value_name = "URL")]
    pub admin: String,
    /// The admin bearer token (admin.token).
    #[arg(long)]
    pub token: String,
    /// The bucket to backfill.
    #[arg(long)]
    pub bucket: String,
    /// A file of keys, one per line.
    #[arg(long, value_name = "FILE", required_unless_present = "list_origin", conflicts_with = "list_origin")]
    pub keys: Option<PathBuf>,
    /// Take the keys from the bucket's private S3 origin's own listing instead.
    #[arg(long)]
    pub list_origin: bool,
    /// With --list-origin: check each stored object's size and ETag against the listing.
    #[arg(long, requires = "list_origin")]
    pub verify: bool,
    /// Fetches at once (1-64).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Draw the job's progress until it ends; the exit status is its outcome.
    #[arg(long)]
    pub follow: bool,
}

pub fn run(args: BackfillArgs) -> ExitCode {
    match start_and_follow(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edgemirror backfill: {e}");
            ExitCode::from(2)
        }
    }
}

fn start_and_follow(args: &BackfillArgs) -> Result<ExitCode, String> {
    let body = match &args.keys {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let keys: Vec<&str> = text.lines().map(str::trim).filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                return Err(format!("{}: no keys", file.display()));
            }
            json!({"keys": keys, "concurrency": args.concurrency})
        }
        None => json!({"listOrigin": true, "verify": args.verify, "concurrency": args.concurrency}),
    };
    let url = format!("{}/v1/regions/local/buckets/{}/backfill", args.admin.trim_end_matches('/'), args.bucket);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let auth = format!("Bearer {}", args.token);
    let started =
        call(agent.post(&url).header("Authorization", &auth).content_type("application/json").send(body.to_string()))?;
    if !args.follow {
        println!("{}", serde_json::to_string_pretty(&started).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    // The total is known once the job has its keys (a listing may take a moment).
    let bar = indicatif::ProgressBar::new(started["keys"]["total"].as_u64().unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} keys {msg} (ETA {eta})",
        )
        .map_err(|e| e.to_string())?,
    );
    let status = loop {
        let status = call(agent.get(&url).header("Authorization", &auth).call())?;
        let finished = ["done", "skipped", "failed"].iter().map(|k| status["keys"][k].as_u64().unwrap_or(0)).sum();
        bar.set_length(status["keys"]["total"].as_u64().unwrap_or(0));
        bar.set_position(finished);
        bar.set_message(format!(
            "{}, {}/s, {} failed",
            indicatif::HumanBytes(status["bytes"].as_u64().unwrap_or(0)),
            indicatif::HumanBytes(status["bytesPerSecond"].as_u64().unwrap_or(0)),
            status["keys"]["failed"].as_u64().unwrap_or(0)
        ));
        if !matches!(status["state"].as_str(), Some("listing" | "running" | "cancelling")) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    bar.finish();
    let state = status["state"].as_str().unwrap_or("unknown");
    let keys = &status["keys"];
    println!(
        "backfill {state}: {} fetched, {} already stored, {} failed, {} bytes",
        keys["done"], keys["skipped"], keys["failed"], status["bytes"]
    );
    for failure in status["failures"].as_array().into_iter().flatten() {
        println!(
            "  failed: {} ({})",
            failure["key"].as_str().unwrap_or("?"),
            failure["reason"].as_str().unwrap_or("?")
        );
    }
    Ok(if state == "complete" { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The `result` of an admin API answer, or its error message.
fn call(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value, String> {
    let mut response = response.map_err(|e| format!("admin API: {e}"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().map_err(|e| format!("admin API: {e}"))?;
    let json: Value = serde_json::from_str(&text).map_err(|_| format!("admin API answered {status}: {text}"))?;
    if !(200..300).contains(&status) {
        let message = json["error"]["message"].as_str().unwrap_or(&text);
        return Err(format!("admin API answered {status}: {message}"));
    }
    Ok(json["result"].clone())
}
