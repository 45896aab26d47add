"""What lightkit writes and says to its user: atomic file writes, input errors that name the file
and field, progress bars for the long steps outside training, and a run's CSV log read back whole."""
