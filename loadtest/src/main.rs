//! `devdb-loadtest`: see `--help` and the crate docs.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use devdb_loadtest::config::LoadArgs;
use devdb_loadtest::workload::Load;

/// Load generator for DevDB: TLS sessions through the proxy (SNI <name>.<domain>) or straight to
/// a server or pooler, in connect, query or idle mode. Prints a summary table; exits 1 when any
/// transaction failed.
#[derive(Parser)]
#[command(name = "devdb-loadtest", version, max_term_width = 100)]
struct Args {
    #[command(flatten)]
    load: LoadArgs,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,

    /// No progress line (for scripts).
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("devdb-loadtest: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let load = Arc::new(Load::new(args.load)?);
    let done = Arc::new(AtomicU64::new(0));
    let progress = (!args.quiet).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let (bar2, done) = (bar.clone(), done.clone());
        let ticker = tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = done.load(Ordering::Relaxed);
                bar2.set_message(format!("{now} done, {}/s", (now - last) * 2));
                last = now;
            }
        });
        (bar, ticker)
    });
    let report = load.run(done).await?;
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    print!("{}", report.table());
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(if report.errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
