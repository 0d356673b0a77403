"""Small shared helpers of the library: output locks and atomic file replacement."""
