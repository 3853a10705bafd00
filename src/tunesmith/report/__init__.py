"""Reports: the run's JSON summary, markdown page and plots."""
