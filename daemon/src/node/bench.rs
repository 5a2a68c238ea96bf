//! benchmark (todo)
