//! `jucr`: see `jucr --help`. All the work is in the library (`src/lib.rs`).

/// jemalloc, not glibc's malloc: glibc kept freed memory in pages shared with each
/// connection's long-lived state, and the cloud profile held 28 KiB per charger against
/// 12 KiB with jemalloc (ADR 0016).
#[cfg(all(not(target_env = "msvc"), not(miri)))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
