//! The randomized convergence checker (filled in separately).
