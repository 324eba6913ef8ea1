"""`flowkeeper console`: a read-only web console over a run's outputs (overview, instances, one
instance's life, dead letters), served on 127.0.0.1 by default."""
