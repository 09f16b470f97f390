"""The knowledge agent: closed incidents in, similarity answers and action statistics out, at least once."""
