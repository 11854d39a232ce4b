//! Tests of the shared API rules: validation (properties and the operator-facing messages),
//! SPIFFE IDs, canary placement.

mod canary;
mod props;
mod validation;
