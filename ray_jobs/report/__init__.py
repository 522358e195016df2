"""Human-facing views of a run: the summary table and sample rows."""
