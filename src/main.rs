//! `jucr`: see `jucr --help`. All the work is in the library (`src/lib.rs`).

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    jucr::cli::run().await
}
