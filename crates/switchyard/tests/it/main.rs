//! Integration tests, grouped in one binary so the dependency graph links once.

mod config;
