//! Switchyard's pure algorithms: every balancing and resilience decision that can be made
//! without I/O. Time is an argument, randomness an injected RNG, so each decision is
//! testable with exact assertions and the packet tier can build its Maglev table from the
//! very same code as the L4/L7 hash policies.
