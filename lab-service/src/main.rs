use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = lab_service::cli::Cli::parse();
    match lab_service::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-service: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
