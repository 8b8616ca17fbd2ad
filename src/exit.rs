//! The process exit statuses, shared by the server, the probe and the command line. A leaf
//! module so that no lower layer has to import the command line to name a status.

/// A runtime failure: cannot listen, cannot persist on stop, probe target unhealthy.
pub const EXIT_FAILURE: u8 = 1;
/// Bad flag, variable or argument.
pub const EXIT_USAGE: u8 = 2;
/// The visits file is corrupt or unreadable; fix it by hand (the message says how).
pub const EXIT_DATA: u8 = 3;
