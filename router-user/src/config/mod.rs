//! Configuration (TOML): schema, validation with file:line:field errors.
