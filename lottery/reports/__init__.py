"""What a run reports: the seed's tickets.json and end-of-run table, and `lottery-compare`, which reads finished levels
across seeds and sweeps (never training) and writes accuracy, mask-overlap, instability and head reports."""
