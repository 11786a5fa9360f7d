//! One integration-test binary: each module starts the real server on 127.0.0.1:0 with a temp
//! data dir and a shortened retry schedule, and talks to it over HTTP.

mod e2e_api;
mod util;
