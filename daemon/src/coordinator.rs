//! coordinator (work in progress)
