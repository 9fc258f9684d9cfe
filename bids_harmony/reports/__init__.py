"""HTML reports: figures of a run, the per-subject report (nireports) and the group report."""
