//! Patroni health checks: pure hysteresis and set computation, and the HTTP prober.
