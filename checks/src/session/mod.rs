//! The session helper's argv parser, with its own copy of the shared argv helpers (which name the
//! parser relative to themselves, so each parser gets the `ArgError` of its own binary).

#[allow(dead_code)]
#[path = "../../../helper/src/args.rs"]
pub(crate) mod args;
#[allow(dead_code)]
#[path = "../../../helper/shared/argv.rs"]
mod argv;
