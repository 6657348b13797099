"""Record, replay, analyse and draw traces."""
