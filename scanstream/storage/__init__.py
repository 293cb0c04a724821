"""Every Redis command and script of scanstream (filled in by the following commits)."""
