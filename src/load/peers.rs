//! Peers for the benchmark (PostgreSQL, Redis); filled in below.
