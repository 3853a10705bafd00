"""``tunesmith ui``: the web UI over a project (runs, a run live, starting runs, data review, the playground,
monitoring and aliases)."""
