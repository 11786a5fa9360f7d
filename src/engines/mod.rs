//! Pure compute behind the APIs, one folder per engine. Nothing here knows about HTTP or SQLite:
//! each engine implements `jobs::Engine` (async jobs) or `jobs::Generator` (generations).

pub mod compose;
