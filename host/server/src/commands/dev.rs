//! `everruns dev fake-llm`: the scripted stand-in model of `everruns-fake-llm`, served for
//! demos and local development, with the settings that point a server at it.

use everruns_fake_llm::{FAKE_LLM_API_KEY, FakeLlm, demo_reply};
use tokio_util::sync::CancellationToken;

use crate::cli::DevCommand;

pub async fn run(command: DevCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    match command {
        DevCommand::FakeLlm { listen } => {
            let fake = FakeLlm::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            // It serves until stopped: keep no request log, answer every request the demo way.
            fake.set_recording(false);
            fake.set_fallback(demo_reply);
            println!("fake LLM listening on http://{}", fake.addr());
            println!("start a server that uses it with:");
            println!(
                "  EVERRUNS_LLM_KIND=openai EVERRUNS_LLM_BASE_URL={} \
                 EVERRUNS_LLM_API_KEY={FAKE_LLM_API_KEY} EVERRUNS_LLM_MODEL=fake-model \
                 everruns serve",
                fake.openai_base_url()
            );
            eprintln!("(EVERRUNS_LLM_KIND=anthropic works too; Ctrl-C stops it)");
            shutdown.cancelled().await;
            Ok(())
        }
    }
}
