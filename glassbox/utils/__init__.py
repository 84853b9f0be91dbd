"""Small helpers shared by the pipeline: atomic file writes, config resolvers, logging set-up."""
