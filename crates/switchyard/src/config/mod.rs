//! Configuration: parse, validate (every error), resolve into a typed model.
