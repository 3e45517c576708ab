//! vmpriv client
