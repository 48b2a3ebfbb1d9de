//! `jucr`: see `jucr --help`. All the work is in the library (`src/lib.rs`).

#[actix_web::main]
async fn main() {
    let code = match jucr::cli::run().await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e:?}");
            1
        }
    };
    // What had to end has ended (storage flushed, sockets closed, logs written): leave
    // now. Returning would drop the tasks still parked on the runtime (actors' timers,
    // pooled connections) after its reactor is gone, and those drops panic.
    std::process::exit(code);
}
