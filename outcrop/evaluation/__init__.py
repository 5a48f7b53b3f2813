"""Model evaluation: metrics, datasets, jobs and reports."""
