//! Test support lives in tests/*.rs.
